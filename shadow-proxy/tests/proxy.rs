//! The proxy in front of two real collectors on 127.0.0.1: the client gets the primary's
//! answer, the shadow gets every copy, and the comparison flags exactly what differs.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tollgate_collector::Collector;
use tollgate_collector::config::Config;
use tollgate_shadow_proxy::compare::Report;
use tollgate_shadow_proxy::{ProxyConfig, run};

/// An address nothing listens on: a privileged port no test binds. (A port taken from
/// a listener bound and dropped here could be handed to another test's server running
/// in parallel.)
const DEAD: &str = "http://127.0.0.1:1";

struct Running {
    url: String,
    /// The proxy's admin listener (reports, metrics); empty for a collector.
    admin: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn collector(data: &Path, allow_unknown: bool) -> Running {
    collector_with(data, |c| c.sources[0].allow_unknown_events = allow_unknown).await
}

async fn collector_with(data: &Path, tweak: impl FnOnce(&mut Config)) -> Running {
    collector_metrics(data, tweak).await.0
}

/// A collector and the metrics it counts.
async fn collector_metrics(
    data: &Path,
    tweak: impl FnOnce(&mut Config),
) -> (
    Running,
    std::sync::Arc<tollgate_collector::telemetry::Metrics>,
) {
    let mut config = Config::embedded();
    config.log.data_dir = data.to_owned();
    // The proxies of these tests run on loopback: their copies are believed.
    config.server.shadow_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    config.schemas.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas");
    tweak(&mut config);
    let collector = Collector::build(config).unwrap();
    let metrics = collector.metrics();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(collector.run(listener, None, async move {
        let _ = stopped.await;
    }));
    let running = Running {
        url,
        admin: String::new(),
        stop: Some(stop),
    };
    (running, metrics)
}

async fn proxy(primary: &str, shadow: &str) -> Running {
    proxy_with(primary, shadow, |_| {}).await
}

async fn proxy_with(primary: &str, shadow: &str, tweak: impl FnOnce(&mut ProxyConfig)) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let mut config = ProxyConfig {
        primary: primary.to_owned(),
        shadow: Some(shadow.to_owned()),
        shadow_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    };
    tweak(&mut config);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run(config, listener, Some(admin), async move {
        let _ = stopped.await;
    }));
    Running {
        url,
        admin: admin_url,
        stop: Some(stop),
    }
}

fn batch(n: usize) -> Value {
    let events: Vec<Value> = (0..10)
        .map(|i| {
            let (name, properties) = if i % 3 == 0 {
                ("button_click", json!({"button": "share"}))
            } else {
                ("item_view", json!({"item_id": format!("item-{i}"), "position": i}))
            };
            json!({
                "event_id": format!("mirror-{n:05}-{i:02}"), "event_name": name, "schema_version": 1,
                "user_id": format!("user-{}", n % 7), "device_id": "device-1",
                "timestamp_event": "2026-11-29T10:00:00Z",
                "platform": if n.is_multiple_of(2) { "web" } else { "android" }, "properties": properties
            })
        })
        .collect();
    json!({"events": events})
}

/// Posts a native batch with the dev write key.
async fn post_events(url: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/events"))
        .basic_auth("dev", Some(""))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Sends `requests` batches through the proxy; returns the answers' request ids.
async fn send_through(proxy: &str, requests: usize) -> Vec<String> {
    send_range(proxy, 0..requests).await
}

async fn send_range(proxy: &str, requests: std::ops::Range<usize>) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in requests {
        let r = client
            .post(format!("{proxy}/v1/events"))
            .basic_auth("dev", Some(""))
            .json(&batch(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["accepted"], 10, "{body}");
    }
    ids
}

async fn report_after(proxy: &str, mirrored: u64) -> Report {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let report: Report = reqwest::get(format!("{proxy}/shadow/report"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let settled = report.mirrored + report.dropped.values().sum::<u64>();
        if settled >= mirrored {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "copies never settled: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn logged(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir.join("events")) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_a_mirrors_everything_and_flags_nothing() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (old, old_metrics) = collector_metrics(old_dir.path(), |_| {}).await;
    let (new, new_metrics) = collector_metrics(new_dir.path(), |_| {}).await;
    let proxy = proxy(&old.url, &new.url).await;
    let request_ids = send_through(&proxy.url, 150).await;
    let report = report_after(&proxy.admin, 150).await;

    assert_eq!(report.mirrored, 150, "{report:?}");
    assert!(report.discontinuities.is_empty(), "{report:?}");
    assert_eq!(report.status_mismatches, 0);
    assert_eq!(report.latency["primary"].count, 150);
    assert_eq!(report.latency["shadow"].count, 150);
    assert!(report.latency["shadow"].p50_us > 0);
    for name in ["item_view", "button_click"] {
        assert_eq!(report.events[name].ratio, Some(1.0));
    }
    // The client's answers are the primary's: their request ids are in the primary's log.
    let primary = logged(old_dir.path());
    assert_eq!(primary.len(), 1500);
    for id in &request_ids {
        assert!(primary.iter().any(|r| r["request_id"] == id.as_str()));
    }
    assert_eq!(
        logged(new_dir.path()).len(),
        1500,
        "the shadow got every copy"
    );
    // The shadow counts the copies apart; the primary saw none.
    assert!(
        new_metrics
            .render()
            .contains("tollgate_shadow_requests_total{route=\"native\"} 150")
    );
    assert!(
        !old_metrics
            .render()
            .contains("tollgate_shadow_requests_total{")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_shadow_is_flagged_for_exactly_that_event() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = collector(old_dir.path(), true).await;
    // The new logging rejects events without a registered schema: button_click has none.
    let new = collector(new_dir.path(), false).await;
    let proxy = proxy(&old.url, &new.url).await;
    send_through(&proxy.url, 120).await;
    let report = report_after(&proxy.admin, 120).await;
    // Among event names, exactly the changed one is flagged (its drop shows in every
    // platform segment too, since both platforms send it).
    let flagged: Vec<&String> = report
        .events
        .iter()
        .filter(|(_, e)| e.discontinuity)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(flagged, ["button_click"], "{report:?}");
    assert_eq!(
        report.events["button_click"]
            .outcomes
            .shadow
            .get("rejected:unknown_event"),
        Some(&480)
    );
    assert_eq!(report.events["item_view"].ratio, Some(1.0));

    // The same findings as Prometheus metrics and as the HTML page.
    let client = reqwest::Client::new();
    let metrics = client
        .get(format!("{}/metrics", proxy.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tollgate_shadow_mirrored_total 120\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_shadow_discontinuity{event_name=\"button_click\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_shadow_discontinuity{event_name=\"item_view\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_shadow_bridge_ratio{event_name=\"item_view\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_shadow_events_total{event_name=\"button_click\",side=\"shadow\",outcome=\"rejected:unknown_event\"} 480\n"),
        "{metrics}"
    );
    let page = client
        .get(format!("{}/shadow/report.html", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    assert!(page.contains("<svg") && !page.contains("<script"));
    assert!(page.contains("Discontinuities: button_click"), "{page}");
    // The flagged row is drawn in red, the steady one in blue.
    assert!(page.contains("fill=\"#b00020\">button_click"), "{page}");
    assert!(page.contains("fill=\"#1a237e\">item_view 1.000"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shadow_changes_nothing_for_clients_and_drops_are_counted() {
    let old_dir = tempfile::tempdir().unwrap();
    let old = collector(old_dir.path(), true).await;
    let proxy = proxy(&old.url, DEAD).await;
    send_through(&proxy.url, 40).await;
    let report = report_after(&proxy.admin, 40).await;
    assert_eq!(report.mirrored, 0);
    assert_eq!(report.dropped.get("shadow_error"), Some(&40), "{report:?}");
    assert_eq!(logged(old_dir.path()).len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_drops_one_platform_is_flagged_for_that_segment() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = collector(old_dir.path(), true).await;
    let new = collector_with(new_dir.path(), |c| c.platforms.retain(|p| p != "android")).await;
    let proxy = proxy(&old.url, &new.url).await;
    send_through(&proxy.url, 100).await;
    let report = report_after(&proxy.admin, 100).await;
    assert!(
        report.segments["platform=android"].discontinuity,
        "{report:?}"
    );
    assert_eq!(report.segments["platform=android"].ratio, Some(0.0));
    assert!(!report.segments["platform=web"].discontinuity, "{report:?}");
    assert_eq!(report.segments["platform=web"].ratio, Some(1.0));
    // Per event and segment too: each event on android is flagged, none on web.
    let flagged: Vec<&String> = report
        .event_segments
        .iter()
        .filter(|(_, e)| e.discontinuity)
        .map(|(k, _)| k)
        .collect();
    assert!(
        flagged.contains(&&"item_view platform=android".to_owned()),
        "{flagged:?}"
    );
    // (and each event's region and source totals, which include android)
    assert!(
        flagged.iter().all(|k| !k.ends_with("platform=web")),
        "{flagged:?}"
    );
    assert!(report.event_segments.contains_key("item_view platform=web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_keeps_whole_users() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = collector(old_dir.path(), true).await;
    let new = collector(new_dir.path(), true).await;
    let proxy = proxy_with(&old.url, &new.url, |c| c.sample_rate = 0.5).await;
    send_through(&proxy.url, 140).await;
    // Every user sends 20 batches (n % 7): at least one sampled user's copies settle.
    let report = report_after(&proxy.admin, 20).await;
    let per_user = |dir: &Path| {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for r in logged(dir) {
            *counts
                .entry(r["user_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        counts
    };
    let settle = tokio::time::Instant::now() + Duration::from_secs(20);
    let (primary, shadow) = loop {
        let (p, s) = (per_user(old_dir.path()), per_user(new_dir.path()));
        let expected: usize = s.keys().map(|u| p[u]).sum();
        if s.values().sum::<usize>() == expected || tokio::time::Instant::now() > settle {
            break (p, s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(primary.len(), 7);
    assert!(
        !shadow.is_empty() && shadow.len() < 7,
        "some users sampled: {shadow:?}"
    );
    for (user, count) in &shadow {
        assert_eq!(*count, primary[user], "user {user} is mirrored whole");
    }
    assert!(report.mirrored > 0);
}

/// Posts `events` straight to a collector.
async fn post_direct(collector: &str, events: Vec<Value>) {
    let r = reqwest::Client::new()
        .post(format!("{collector}/v1/events"))
        .basic_auth("dev", Some(""))
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_compare_reports_the_known_differences_exactly() {
    use tollgate_shadow_proxy::offline::{Mapping, compare};
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = collector(old_dir.path(), true).await;
    // The new logging drops android and the web client renamed button_click.
    let new = collector_with(new_dir.path(), |c| c.platforms.retain(|p| p != "android")).await;
    let event = |id: String, name: &str, platform: &str, properties: Value, session: Value| {
        json!({"event_id": id, "event_name": name, "schema_version": 1, "user_id": "u-1",
               "session_id": session, "timestamp_event": "2026-11-29T10:00:00Z",
               "platform": platform, "properties": properties})
    };
    for n in 0..150 {
        let platform = if n % 3 == 0 { "android" } else { "web" };
        let item = json!({"item_id": "i-1", "position": 1});
        let mut old_events = vec![
            event(
                format!("cmp-{n:04}-a"),
                "item_view",
                platform,
                item.clone(),
                json!("s-1"),
            ),
            event(
                format!("cmp-{n:04}-b"),
                "button_click",
                platform,
                json!({"button": "share"}),
                json!("s-1"),
            ),
        ];
        let mut new_events = vec![
            // New logging stopped sending session ids for item_view.
            event(
                format!("cmp-{n:04}-a"),
                "item_view",
                platform,
                item,
                Value::Null,
            ),
            event(
                format!("cmp-{n:04}-b"),
                "button_tap",
                platform,
                json!({"button": "share", "variant": "b"}),
                json!("s-1"),
            ),
        ];
        post_direct(&old.url, std::mem::take(&mut old_events)).await;
        post_direct(&new.url, std::mem::take(&mut new_events)).await;
    }

    let plain = compare(old_dir.path(), new_dir.path(), &Mapping::default(), 0.05).unwrap();
    assert_eq!(plain.events["button_click"].new, 0);
    assert_eq!(plain.events["button_tap"].old, 0);
    assert!(plain.discontinuities.contains(&"button_click".to_owned()));
    assert!(plain.discontinuities.contains(&"button_tap".to_owned()));

    let mapping: Mapping = toml::from_str("[rename]\nbutton_click = \"button_tap\"\n").unwrap();
    let mapped = compare(old_dir.path(), new_dir.path(), &mapping, 0.05).unwrap();
    // 50 of 150 requests were android: the new side lost a third of each event.
    let tap = &mapped.events["button_tap"];
    assert_eq!((tap.old, tap.new), (150, 100));
    assert_eq!(tap.new_fields, ["variant"]);
    assert!(tap.discontinuity);
    let view = &mapped.events["item_view"];
    assert_eq!((view.old, view.new), (150, 100));
    assert_eq!(view.null_rate_changes.get("session_id"), Some(&(0.0, 1.0)));
    assert_eq!(mapped.only_in_old, 100, "the android events' ids");
    assert_eq!(mapped.only_in_new, 0);
    assert!(
        mapped.drifted.contains(&"platform".to_owned()),
        "{:?}",
        mapped.psi
    );
    assert!(!mapped.drifted.contains(&"surface".to_owned()));
    assert!(!mapped.clean());
    // Per event × segment: exactly android lost item_view.
    assert!(mapped.segments["item_view platform=android"].discontinuity);
    assert_eq!(mapped.segments["item_view platform=android"].new, 0);
    assert!(!mapped.segments["item_view platform=web"].discontinuity);
    assert_eq!(mapped.segments["item_view platform=web"].ratio, Some(1.0));

    // The same change written as a bridge (a split or merge would list several names):
    // judged against its expected ratio, per segment too; its names are not flagged alone.
    let bridged: Mapping = toml::from_str(
        "[[bridge]]\nname = \"click\"\nold = [\"button_click\"]\nnew = [\"button_tap\"]\nexpected_ratio = 1.0\n",
    )
    .unwrap();
    let bridged = compare(old_dir.path(), new_dir.path(), &bridged, 0.05).unwrap();
    assert_eq!(
        (bridged.bridges["click"].old, bridged.bridges["click"].new),
        (150, 100)
    );
    assert!(bridged.bridges["click platform=android"].discontinuity);
    assert!(!bridged.bridges["click platform=web"].discontinuity);
    assert!(!bridged.discontinuities.contains(&"button_click".to_owned()));
    assert!(
        !bridged
            .discontinuities
            .contains(&"button_tap platform=web".to_owned())
    );
    assert!(bridged.discontinuities.contains(&"click".to_owned()));

    // A/A: the old log against itself is clean, and the binary says so with exit 0.
    let same = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-shadow-proxy"))
        .args(["compare", "--old"])
        .arg(old_dir.path())
        .arg("--new")
        .arg(old_dir.path())
        .output()
        .unwrap();
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let differs = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-shadow-proxy"))
        .args(["compare", "--json", "--old"])
        .arg(old_dir.path())
        .arg("--new")
        .arg(new_dir.path())
        .output()
        .unwrap();
    assert_eq!(differs.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&differs.stdout).unwrap();
    assert_eq!(json["only_in_old"], 100);
}

/// A misbehaving shadow: answers every request with `status` after `delay`.
async fn misbehaving_shadow(status: u16, delay: Duration) -> String {
    scripted(status, delay, &[], b"{}").await
}

/// An upstream that answers every request with `status`, `headers` and `body` after
/// `delay`.
async fn scripted(
    status: u16,
    delay: Duration,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
) -> String {
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    let mut response =
                        hyper::Response::new(Full::new(bytes::Bytes::from_static(body)));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    for (name, value) in headers {
                        response
                            .headers_mut()
                            .insert(*name, hyper::header::HeaderValue::from_static(value));
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shadow_times_out_copies_and_a_failing_one_is_counted_as_mismatch() {
    let old_dir = tempfile::tempdir().unwrap();
    let old = collector(old_dir.path(), true).await;

    // Far slower than the shadow timeout: every copy times out, clients are unaffected.
    let slow = misbehaving_shadow(200, Duration::from_secs(30)).await;
    let slow_proxy = proxy_with(&old.url, &slow, |c| {
        c.shadow_timeout = Duration::from_millis(100)
    })
    .await;
    send_range(&slow_proxy.url, 0..20).await;
    let report = report_after(&slow_proxy.admin, 20).await;
    assert_eq!(
        report.dropped.get("shadow_timeout"),
        Some(&20),
        "{report:?}"
    );
    assert_eq!(report.mirrored, 0);

    // Answers 500: compared, and every request is a status mismatch.
    let failing = misbehaving_shadow(500, Duration::ZERO).await;
    let failing_proxy = proxy(&old.url, &failing).await;
    send_range(&failing_proxy.url, 20..50).await;
    let report = report_after(&failing_proxy.admin, 30).await;
    assert_eq!(
        (report.mirrored, report.status_mismatches),
        (30, 30),
        "{report:?}"
    );
    assert_eq!(
        logged(old_dir.path()).len(),
        500,
        "the primary logged every event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_answers_502_and_is_counted() {
    let proxy = proxy(DEAD, DEAD).await;
    let r = post_events(&proxy.url, &batch(0)).await;
    assert_eq!(r.status().as_u16(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "primary_unavailable");
    let report: Report = reqwest::get(format!("{}/shadow/report", proxy.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((report.primary_errors, report.mirrored), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_reach_the_proxy_over_tls() {
    let (primary_dir, shadow_dir, certs) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let files = tollgate_edge::TlsFiles {
        cert: certs.path().join("cert.pem"),
        key: certs.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
    let primary = collector(primary_dir.path(), true).await;
    let shadow = collector(shadow_dir.path(), true).await;
    let proxy = proxy_with(&primary.url, &shadow.url, |c| c.tls = Some(files)).await;
    let url = proxy.url.replace("http://", "https://");

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let response = client
        .post(format!("{url}/v1/events"))
        .basic_auth("dev", Some(""))
        .json(&batch(0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2, "ALPN picks h2");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 10, "{body}");
}

/// A schema directory with `item_view` and one more event (any properties).
fn schemas_with(dir: &Path, event: &str) -> std::path::PathBuf {
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas/item_view/v1.json");
    std::fs::copy(shipped, schemas.join("item_view.v1.json")).unwrap();
    std::fs::write(
        schemas.join(format!("{event}.v1.json")),
        r#"{"type": "object"}"#,
    )
    .unwrap();
    schemas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_is_bridged_live_and_a_replica_sets_the_noise_floor() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Old logging knows button_click, new logging calls it button_tap; the client logs
    // both during the migration. The replica runs the old version again.
    let versioned = |dir: &Path, event: &str| {
        let schemas = schemas_with(dir, event);
        move |c: &mut Config| {
            c.schemas.dir = schemas;
            c.sources[0].allow_unknown_events = false;
            c.default_region = "eu".into();
        }
    };
    let old = collector_with(dirs[0].path(), versioned(dirs[0].path(), "button_click")).await;
    let replica = collector_with(dirs[1].path(), versioned(dirs[1].path(), "button_click")).await;
    let new = collector_with(dirs[2].path(), versioned(dirs[2].path(), "button_tap")).await;
    let mapping: tollgate_shadow_proxy::mapping::Mapping =
        toml::from_str("[rename]\nbutton_click = \"button_tap\"\n").unwrap();
    let proxy = proxy_with(&old.url, &new.url, |c| {
        c.replica = Some(replica.url.clone());
        c.mapping = mapping;
    })
    .await;
    let requests = 120;
    for n in 0..requests {
        let platform = if n % 2 == 0 { "web" } else { "android" };
        let event = |suffix: &str, name: &str, properties: Value| {
            json!({"event_id": format!("bridge-{n:04}-{suffix}"), "event_name": name,
                   "schema_version": 1, "user_id": format!("user-{}", n % 9),
                   "timestamp_event": "2026-11-29T10:00:00Z", "platform": platform,
                   "app_version": "5.1.0", "properties": properties})
        };
        let body = json!({"events": [
            event("a", "item_view", json!({"item_id": "i-1", "position": 1})),
            event("b", "button_click", json!({"button": "share"})),
            event("c", "button_tap", json!({"button": "share"})),
        ]});
        let answer = post_events(&proxy.url, &body).await;
        // The explanation the proxy asked for is not passed on to the client.
        assert!(!answer.headers().contains_key("x-tollgate-outcomes"));
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(
            (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
            (Some(2), Some(1))
        );
    }
    let report = report_after(&proxy.admin, requests).await;
    assert!(
        report.discontinuities.is_empty(),
        "{:?}",
        report.discontinuities
    );
    let bridge = &report.bridges["button_click→button_tap"];
    assert_eq!(bridge.ratio, Some(1.0));
    assert_eq!(
        bridge.noise.as_ref().unwrap().ratio,
        Some(1.0),
        "old vs old"
    );
    for segment in [
        "platform=web",
        "platform=android",
        "region=eu",
        "source=dev",
        "app_version=5.1.0",
    ] {
        let row = &report.bridges[&format!("button_click→button_tap {segment}")];
        assert_eq!(row.ratio, Some(1.0), "{segment}");
    }
    // Each renamed name alone differs completely, but is judged through its bridge.
    let click = &report.events["button_click"];
    assert!(click.mapped && !click.discontinuity);
    assert_eq!(
        click.outcomes.shadow.get("rejected:unknown_event"),
        Some(&requests)
    );
    assert_eq!(
        report.events["item_view"].noise.as_ref().unwrap().ratio,
        Some(1.0)
    );
    // Region and source are segments the collector reported in its explanation.
    // (Segment totals leave the bridged names to their bridge.)
    assert_eq!(
        report.segments["region=eu"]
            .outcomes
            .primary
            .get("accepted"),
        Some(&requests)
    );
    assert_eq!(report.segments["source=dev"].ratio, Some(1.0));
    assert_eq!(report.latency["replica"].count, requests);
    // The replica logged the copies apart, like the shadow.
    assert_eq!(logged(dirs[1].path()).len(), 2 * requests as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_requests_are_compared_per_event_and_a_large_body_is_passed_on_uncopied() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = collector(old_dir.path(), true).await;
    // The new logging no longer accepts events without a schema.
    let new = collector(new_dir.path(), false).await;
    let proxy = proxy_with(&old.url, &new.url, |c| c.max_body = 4096).await;
    let client = reqwest::Client::new();
    for n in 0..60 {
        let body = json!({"batch": [
            {"type": "track", "event": "Item View", "messageId": format!("seg-{n}-a"),
             "userId": "u-1", "properties": {"item_id": "i-1", "position": 1}},
            {"type": "track", "event": "Promo Shown", "messageId": format!("seg-{n}-b"),
             "userId": "u-1", "properties": {}},
        ], "context": {"library": {"name": "analytics-ios"}}});
        let answer = client
            .post(format!("{}/v1/batch", proxy.url))
            .basic_auth("dev", Some(""))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.text().await.unwrap(), r#"{"success":true}"#);
    }
    // A body over the proxy's copy limit still reaches the primary, streamed whole.
    let big: Vec<Value> = (0..40)
        .map(|i| {
            json!({"event_id": format!("big-{i:04}-0000"), "event_name": "item_view",
            "schema_version": 1, "user_id": "u-2", "timestamp_event": "2026-11-29T10:00:00Z",
            "platform": "ios", "properties": {"item_id": format!("item-{i}"), "position": i}})
        })
        .collect();
    let answer = post_events(&proxy.url, &json!({"events": big})).await;
    assert_eq!(answer.status().as_u16(), 200);
    let report = report_after(&proxy.admin, 61).await;
    assert_eq!(report.dropped.get("too_large"), Some(&1), "{report:?}");
    assert_eq!(report.mirrored, 60);
    // Segment answers carry no per-event results; the explanation headers do.
    let promo = &report.events["promo_shown"];
    assert_eq!(promo.outcomes.primary.get("accepted"), Some(&60));
    assert_eq!(
        promo.outcomes.shadow.get("rejected:unknown_event"),
        Some(&60)
    );
    assert!(promo.discontinuity);
    assert_eq!(report.events["item_view"].ratio, Some(1.0));
    assert!(
        report.segments.contains_key("platform=ios"),
        "{:?}",
        report.segments.keys()
    );
    // Exactly the changed event is flagged: alone, per segment, and in the totals of
    // the segments it belongs to.
    let mut flagged = report.discontinuities.clone();
    flagged.sort();
    assert_eq!(
        flagged,
        [
            "platform=ios",
            "promo_shown",
            "promo_shown platform=ios",
            "promo_shown region=default",
            "promo_shown source=dev",
            "region=default",
            "source=dev"
        ]
    );
    assert_eq!(logged(old_dir.path()).len(), 120 + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_the_primarys_status_headers_and_body_byte_for_byte() {
    const BODY: &[u8] =
        b"{\"error\":{\"code\":\"rate_limited\",\"message\":\"slow down \xc3\xa9\"}}\n";
    let primary = scripted(
        429,
        Duration::ZERO,
        &[
            ("retry-after", "7"),
            ("x-request-id", "req-123"),
            ("content-type", "application/json"),
        ],
        BODY,
    )
    .await;
    let shadow = misbehaving_shadow(200, Duration::ZERO).await;
    let proxy = proxy(&primary, &shadow).await;
    let answer = post_events(&proxy.url, &batch(0)).await;
    assert_eq!(answer.status().as_u16(), 429);
    assert_eq!(answer.headers()["retry-after"], "7");
    assert_eq!(answer.headers()["x-request-id"], "req-123");
    assert_eq!(answer.headers()["content-type"], "application/json");
    assert_eq!(&answer.bytes().await.unwrap()[..], BODY);
    let report = report_after(&proxy.admin, 1).await;
    assert_eq!(report.status_mismatches, 1, "429 against 200");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-shadow-proxy"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--primary",
            "http://127.0.0.1:9",
        ])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the proxy binary starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("tollgate-shadow-proxy ready"));
    assert!(ready, "the proxy says when it is ready");
    std::thread::spawn(move || for _ in lines {});
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM drains and exits 0: {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_served_on_the_admin_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let primary = collector(dir.path(), true).await;
    let shadow_dir = tempfile::tempdir().unwrap();
    let shadow = collector(shadow_dir.path(), true).await;
    let proxy = proxy(&primary.url, &shadow.url).await;
    // On the client-facing port the path is the primary's business (a 404 there).
    let public = reqwest::get(format!("{}/shadow/report", proxy.url))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let admin = reqwest::get(format!("{}/shadow/report", proxy.admin))
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
}

/// Settings in layers: the file, then `TOLLGATE_SHADOW_PROXY_*`, then flags. A value
/// each layer rejects (sample_rate 2) shows which layer the proxy read.
#[test]
fn the_environment_overrides_the_file_and_flags_override_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        "primary = \"http://127.0.0.1:9\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nsample_rate = 0.5\n",
    )
    .unwrap();
    let run = |env: Option<&str>, flag: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-shadow-proxy"));
        command.arg("--config").arg(&file);
        if let Some(rate) = env {
            command.env("TOLLGATE_SHADOW_PROXY_SAMPLE_RATE", rate);
        }
        if let Some(rate) = flag {
            command.args(["--sample-rate", rate]);
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Either it refuses its settings and exits, or it gets ready and is stopped.
        let mut stderr = String::new();
        use std::io::BufRead;
        for line in std::io::BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            stderr.push_str(&line);
            if line.contains("tollgate-shadow-proxy ready") {
                let _ = child.kill();
                break;
            }
        }
        let _ = child.wait();
        stderr
    };
    let from_env = run(Some("2"), None);
    assert!(
        from_env.contains("sample_rate 2 is not between 0 and 1"),
        "{from_env}"
    );
    let from_flag = run(Some("0.25"), Some("3"));
    assert!(
        from_flag.contains("sample_rate 3 is not between 0 and 1"),
        "{from_flag}"
    );
    let fixed_by_flag = run(Some("2"), Some("0.25"));
    assert!(fixed_by_flag.contains("ready"), "{fixed_by_flag}");
}
