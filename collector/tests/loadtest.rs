//! tollgate-loadtest against a real collector on 127.0.0.1 (here, beside the collector:
//! the load tester does not depend on it): a run with injected SDK
//! retries, late, skewed and invalid events reconciles clean; a damaged log does not.

use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;
use tollgate_collector::Collector;
use tollgate_collector::config::Config;
use tollgate_loadtest::generate::Scenario;
use tollgate_loadtest::run::{Model, RunConfig, run};
use tollgate_loadtest::verify::verify;

/// Starts a collector on its embedded defaults in `data`; returns its URL and a stop.
async fn collector(data: &Path) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut config = Config::embedded();
    config.log.data_dir = data.to_owned();
    config.schemas.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas");
    let collector = Collector::build(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(collector.run(listener, None, async move {
        let _ = stopped.await;
    }));
    (url, stop, task)
}

fn config(
    target: String,
    model: Model,
    requests: Option<u64>,
    duration: Option<Duration>,
    manifest: Option<&Path>,
) -> RunConfig {
    RunConfig {
        targets: vec![target],
        write_key: "dev".into(),
        model,
        duration,
        requests,
        seed: 42,
        run_id: "e2e".into(),
        scenario: Scenario {
            batch_size: 10,
            retry_rate: 0.1,
            invalid_rate: 0.05,
            late_rate: 0.05,
            skewed_device_rate: 0.2,
            unknown_key_rate: 0.05,
            ..Scenario::default()
        },
        manifest: manifest.map(Path::to_owned),
        http2: false,
        gzip: false,
        ca_file: None,
        scrape: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_run_reconciles_clean_and_damage_is_found() {
    let data = tempfile::tempdir().unwrap();
    let manifest = data.path().join("manifest.ndjson");
    let (url, stop, task) = collector(data.path()).await;
    let report = run(config(
        url,
        Model::Closed { connections: 4 },
        Some(300),
        None,
        Some(&manifest),
    ))
    .await
    .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();

    assert_eq!(report.requests, 300);
    // A retry that races its original gets 503 + "retry" (resend later): the only
    // non-200 answer allowed here.
    let ok = report.outcomes.statuses.get(&200).copied().unwrap_or(0);
    let busy = report.outcomes.statuses.get(&503).copied().unwrap_or(0);
    let refused = report.outcomes.statuses.get(&401).copied().unwrap_or(0);
    assert!(
        refused > 5,
        "unknown write keys were injected: {:?}",
        report.outcomes
    );
    assert_eq!(ok + busy + refused, 300, "{:?}", report.outcomes);
    assert!(busy < 30, "{:?}", report.outcomes);
    let outcome = |k: &str| report.outcomes.events.get(k).copied().unwrap_or(0);
    assert!(outcome("accepted") > 2000, "{:?}", report.outcomes);
    assert!(
        outcome("duplicate") > 100,
        "SDK retries were injected and recognised"
    );
    assert!(
        outcome("rejected") > 50,
        "invalid events were injected and rejected"
    );

    let v = verify(&manifest, data.path()).unwrap();
    assert!(v.clean(), "{v:?}");
    assert_eq!(v.acknowledged, outcome("accepted"));
    assert_eq!(v.logged, v.acknowledged);
    assert!(v.quarantined > 50);
    assert_eq!((v.lost, v.duplicated, v.retries_through), (0, 0, 0));
    assert_eq!(
        v.valid_rejected, 0,
        "every generated valid event passes the collector"
    );

    // Damage the log: cut the last 7 records, and write one record twice.
    let events = data.path().join("events");
    let mut segments: Vec<_> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kept = &lines[..lines.len() - 7];
    let mut damaged = kept.join("\n");
    damaged.push('\n');
    damaged.push_str(kept[0]);
    damaged.push('\n');
    std::fs::write(last, damaged).unwrap();
    let v = verify(&manifest, data.path()).unwrap();
    assert!(!v.clean());
    assert_eq!((v.lost, v.duplicated), (7, 1), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_sends_at_its_rate() {
    let data = tempfile::tempdir().unwrap();
    let (url, stop, task) = collector(data.path()).await;
    // 200 requests/s for 2 s: the schedule, not the server, decides how many are sent.
    let report = run(config(
        url,
        Model::Open { rate: 200.0 },
        None,
        Some(Duration::from_secs(2)),
        None,
    ))
    .await
    .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(report.requests, 400);
    // Every request was answered: 200, 401 for an injected unknown key, or 503 for an
    // injected retry racing its original.
    let answered: u64 = [200, 401, 503]
        .iter()
        .filter_map(|s| report.outcomes.statuses.get(s))
        .sum();
    assert_eq!(answered, 400, "{:?}", report.outcomes);
    assert!(report.latency.p50_us > 0 && report.latency.max_us >= report.latency.p99_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_gzip_runs_reconcile_clean_and_ramps_follow_their_stages() {
    use tollgate_loadtest::run::Stage;
    let data = tempfile::tempdir().unwrap();
    let manifest = data.path().join("manifest.ndjson");
    let (url, stop, task) = collector(data.path()).await;
    let mut cfg = config(
        url.clone(),
        Model::Closed { connections: 2 },
        Some(60),
        None,
        Some(&manifest),
    );
    cfg.http2 = true;
    cfg.gzip = true;
    let report = run(cfg).await.unwrap();
    assert_eq!(report.requests, 60);
    let v = verify(&manifest, data.path()).unwrap();
    assert!(v.clean() && v.acknowledged > 300, "{v:?}");

    // 0 → 100 req/s over 1 s, then → 300 req/s over 1 s: 50 + 200 requests by schedule.
    static STAGES: [Stage; 2] = [
        Stage {
            duration: Duration::from_secs(1),
            rate: 100.0,
        },
        Stage {
            duration: Duration::from_secs(1),
            rate: 300.0,
        },
    ];
    let report = run(config(url, Model::Ramp(&STAGES), None, None, None))
        .await
        .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(
        (235..=265).contains(&report.requests),
        "{} requests",
        report.requests
    );
    let first: u64 = report.series.first().map(|s| s.requests).unwrap_or(0);
    let second: u64 = report.series.get(1).map(|s| s.requests).unwrap_or(0);
    assert!(second > 2 * first, "the rate rises: {:?}", report.series);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_posthog_and_snowplow_runs_reconcile_clean() {
    use tollgate_loadtest::generate::Protocol;
    for protocol in [Protocol::Segment, Protocol::PostHog, Protocol::Snowplow] {
        let data = tempfile::tempdir().unwrap();
        let manifest = data.path().join("manifest.ndjson");
        let (url, stop, task) = collector(data.path()).await;
        let mut cfg = config(
            url,
            Model::Closed { connections: 3 },
            Some(120),
            None,
            Some(&manifest),
        );
        cfg.scenario.protocol = protocol;
        let report = run(cfg).await.unwrap();
        stop.send(()).unwrap();
        task.await.unwrap();
        // These answers carry no per-event outcomes; verify works from the statuses.
        assert!(
            report.outcomes.events.get("none").copied().unwrap_or(0) > 1000,
            "{protocol:?}: {:?}",
            report.outcomes
        );
        let v = verify(&manifest, data.path()).unwrap();
        assert!(v.clean(), "{protocol:?}: {v:?}");
        assert!(
            v.acknowledged > 900 && v.quarantined > 20,
            "{protocol:?}: {v:?}"
        );
        // Requests with an unknown key (or, for Snowplow, an unknown key in a header)
        // were refused whole.
        assert_eq!(v.unknown_key_not_refused, 0, "{protocol:?}");
        let api = protocol.as_str();
        let logged = std::fs::read_dir(data.path().join("events"))
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect::<String>();
        assert!(
            logged.contains(&format!("\"api\":\"{api}\"")),
            "{protocol:?}"
        );
    }
}
