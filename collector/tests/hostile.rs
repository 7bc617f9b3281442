//! Hostile input over real sockets: client times that would overflow, bytes the privacy
//! policy cannot see, values that error messages could echo, write keys in bodies,
//! spoofed shadow headers, and a memory budget that runs out. Each test fails without
//! the defence it names.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_collector::Overrides;

use support::*;

async fn with_privacy() -> TestCollector {
    TestCollector::start_with(|c| c.privacy.file = shipped_privacy(), Overrides::default()).await
}

/// POSTs `body` as it is, with the dev key and the given content type.
async fn post_raw(c: &TestCollector, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let response = c
        .client
        .post(c.url(path))
        .basic_auth(DEV_KEY, Some(""))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    into_parts(response).await
}

#[tokio::test]
async fn client_times_past_the_writable_years_reject_one_event_not_the_batch() {
    let c = TestCollector::start().await;
    // Year 10000 in UTC once its offset is applied.
    let mut offset = event("time-offset-01");
    offset["timestamp_event"] = json!("9999-12-31T23:30:00-01:00");
    // Skew correction by 8 000 years of client clock error.
    let mut skewed = event("time-skewed-01");
    skewed["timestamp_event"] = json!("9999-06-01T00:00:00Z");
    let good = event("time-good-0001");
    let (status, answer) = c
        .post_events(&json!({"sent_at": "1990-01-01T00:00:00Z", "events": [offset, skewed, good]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    for (i, id) in [(0, "time-offset-01"), (1, "time-skewed-01")] {
        let result = &answer["results"][i];
        assert_eq!(result["status"], "rejected", "{answer}");
        assert_eq!(result["error"]["code"], "invalid_value");
        assert_eq!(result["error"]["path"], "/timestamp_event");
        assert_eq!(result["event_id"], id);
    }
    assert_eq!(count_id(&c.events(), "time-good-0001"), 1);
    assert_eq!(c.quarantine().len(), 2);

    // The same through the Segment API: timestamp and sentAt of a track call.
    let (status, _) = c
        .post(
            "/v1/track",
            DEV_KEY,
            &json!({"event": "Button Pressed", "userId": "u1", "messageId": "seg-time-0001",
                    "timestamp": "9999-12-31T12:00:00Z", "sentAt": "0001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200);
    let quarantined = c.quarantine();
    let segment = quarantined.last().unwrap();
    assert_eq!(segment["error"]["code"], "invalid_value");
    assert_eq!(segment["error"]["path"], "/timestamp");
}

#[tokio::test]
async fn a_line_that_is_not_json_is_quarantined_as_size_and_keyed_digest_only() {
    let c = with_privacy().await;
    let good = serde_json::to_string(&event("ndjson-good-01")).unwrap();
    let body = format!("{{\"email\":\"jane@example.com\", bad}}\n{good}\n");
    let (status, answer) = post_raw(&c, "/v1/events", "application/x-ndjson", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["error"]["code"], "invalid_event");
    assert!(!answer.to_string().contains("jane"), "{answer}");
    let quarantined = c.quarantine();
    assert_eq!(quarantined.len(), 1);
    let unparsed = &quarantined[0]["event"]["unparsed"];
    assert_eq!(unparsed["bytes"], 33, "{unparsed}");
    assert_eq!(unparsed["hmac_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(unparsed["privacy_key"], "generated");
    let written = written_under(&c.data);
    assert!(written.contains("ndjson-good-01"), "the scan read the log");
    assert!(!written.contains("jane"), "the raw line reached a file");

    // A JSON value that is not an object is opaque too: the policy cannot see into it.
    let (_, answer) = c
        .post_events(&json!({"events": ["call +49 30 1234567 or jane@example.com", 5]}))
        .await;
    assert_eq!(answer["rejected"], 2, "{answer}");
    let written = written_under(&c.data);
    assert!(!written.contains("jane") && !written.contains("1234567"));
}

#[tokio::test]
async fn error_messages_never_echo_a_value() {
    let c = with_privacy().await;
    let mut bad = event("echo-bad-00001");
    bad["properties"]["position"] = json!("jane@example.com");
    let (_, answer) = c.post_events(&json!({"events": [bad]})).await;
    let error = &answer["results"][0]["error"];
    assert_eq!(error["code"], "schema_violation", "{answer}");
    assert_eq!(error["path"], "/properties/position");
    assert!(
        !error["message"].as_str().unwrap().contains("jane"),
        "{error}"
    );
    let record = &c.quarantine()[0];
    assert!(
        !record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("jane")
    );

    // A wrong type in the envelope: serde's own message would quote the value.
    let (status, answer) = c
        .post_events(&json!({"sent_at": {"who": "jane@example.com"}, "events": []}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_envelope");
    assert!(!answer.to_string().contains("jane"), "{answer}");
    let (status, answer) = c.post_events(&json!({"events": "jane@example.com"})).await;
    assert_eq!(status, 400);
    assert!(!answer.to_string().contains("jane"), "{answer}");
    // Headers are not echoed either.
    let response = c
        .client
        .post(c.url("/v1/events"))
        .basic_auth(DEV_KEY, Some(""))
        .header("content-type", "application/x-jane@example.com")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, answer) = into_parts(response).await;
    assert_eq!(status, 415);
    assert!(!answer.to_string().contains("jane"), "{answer}");
}

#[tokio::test]
async fn a_write_key_in_a_segment_body_never_reaches_a_file() {
    let c = TestCollector::start().await;
    let response = c
        .client
        .post(c.url("/v1/track"))
        .json(
            &json!({"writeKey": STRICT_KEY, "event": "Signed Up", "userId": "u-1",
                      "messageId": "wk-body-00001", "timestamp": "yesterday",
                      "properties": {"plan": "pro"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let quarantined = c.quarantine();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["event"]["event_id"], "wk-body-00001");
    assert_eq!(quarantined[0]["source"], "strict_app");
    assert!(quarantined[0]["event"].get("writeKey").is_none());
    assert!(
        !written_under(&c.data).contains(STRICT_KEY),
        "the write key reached a file"
    );
}

#[tokio::test]
async fn a_rejected_segment_message_takes_the_same_policy_as_an_accepted_one() {
    let c = with_privacy().await;
    let message = |id: &str, timestamp: &str| {
        json!({"userId": "seg-user-4242", "anonymousId": "seg-anon-4242", "messageId": id,
               "timestamp": timestamp,
               "context": {"ip": "198.51.100.123", "location": {"country": "DE"},
                           "userAgent": "RawAgent/9.9 (secret-device)",
                           "consent": {"categoryPreferences": {"Analytics": true}}},
               "traits": {"email": "seg.person@example.org", "plan": "pro"}})
    };
    // Germany only from the Segment location (no edge header): the EU policy.
    let (status, _) = c
        .post(
            "/v1/identify",
            DEV_KEY,
            &message("seg-good-0001", "2026-11-29T10:00:00Z"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = c
        .post(
            "/v1/identify",
            DEV_KEY,
            &message("seg-bad-00001", "not a time"),
        )
        .await;
    assert_eq!(status, 200);
    let accepted = &c.events()[0];
    assert_eq!(accepted["region"], "eu", "{accepted}");
    assert_eq!(accepted["context"]["ip"], "198.51.100.0");
    let quarantined = &c.quarantine()[0];
    assert_eq!(
        quarantined["event"]["event_id"], "seg-bad-00001",
        "{quarantined}"
    );
    assert_eq!(quarantined["event"]["context"]["ip"], "198.51.100.0");
    assert_eq!(quarantined["event"]["properties"]["plan"], "pro");
    let written = written_under(&c.data);
    for raw in [
        "seg-user-4242",
        "seg-anon-4242",
        "198.51.100.123",
        "RawAgent",
        "seg.person@example.org",
    ] {
        assert!(!written.contains(raw), "{raw:?} reached a file");
    }
}

#[tokio::test]
async fn an_event_id_holding_personal_data_is_rejected_under_a_pii_policy() {
    let c = with_privacy().await;
    let mut e = event("jane.doe@example.com");
    e["context"]["country"] = json!("DE");
    let (_, answer) = c.post_events(&json!({"events": [e]})).await;
    assert_eq!(
        answer["results"][0]["error"]["code"], "invalid_value",
        "{answer}"
    );
    assert_eq!(answer["results"][0]["error"]["path"], "/event_id");
    assert!(!written_under(&c.data).contains("jane.doe@example.com"));
}

#[tokio::test]
async fn a_spoofed_shadow_header_from_an_untrusted_client_is_logged_as_real_traffic() {
    let shadow_dir = tempfile::tempdir().unwrap();
    let shadow_path = shadow_dir.path().to_owned();
    // Shadow copies are believed only from 10.1.2.3, never from loopback.
    let c = TestCollector::start_with(
        |config| {
            config.log.shadow_data_dir = Some(shadow_path);
            config.server.shadow_proxies = vec!["10.1.2.3/32".parse().unwrap()];
        },
        Overrides::default(),
    )
    .await;
    let response = c
        .client
        .post(c.url("/v1/events"))
        .basic_auth(DEV_KEY, Some(""))
        .header("x-tollgate-shadow", "1")
        .json(&batch(&["spoof-shadow-01"]))
        .send()
        .await
        .unwrap();
    let (status, answer) = into_parts(response).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)));
    assert_eq!(
        count_id(&c.events(), "spoof-shadow-01"),
        1,
        "in the main log"
    );
    assert!(read_lines(&shadow_dir.path().join("events")).is_empty());
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_shadow_header_untrusted_total{route=\"native\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn past_the_memory_budget_a_request_is_told_to_retry_and_loses_nothing() {
    let (c, log) = start_with_faulty_log(|config| {
        // Room for one large request and a small one, not two large ones: each holds
        // its body, then twice its decoded size.
        config.limits.max_body = bytesize::ByteSize::kib(64);
        config.limits.max_decompressed = bytesize::ByteSize::kib(64);
        config.limits.max_event = bytesize::ByteSize::kib(32);
        config.limits.max_in_flight_bytes = bytesize::ByteSize::kib(192);
    })
    .await;
    let padded = |id: &str, kib: usize| {
        let mut e = event(id);
        e["event_name"] = json!("padded_event");
        e["properties"] = json!({"padding": "x".repeat(kib << 10)});
        e
    };
    let large = json!({"events": [padded("budget-first-01", 25), padded("budget-first-02", 25)]});
    let gate = log.hold();
    let first = tokio::spawn({
        let (client, url) = (c.client.clone(), c.url("/v1/events"));
        async move { send(&client, &url, &large).await }
    });
    // The first request holds its bytes (about 150 KiB) while the log holds its append.
    while log.appends.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let medium = json!({"events": [padded("budget-second-1", 20)]});
    let second = send(&c.client, &c.url("/v1/events"), &medium).await;
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let (_, body) = into_parts(second).await;
    assert_eq!(body["error"]["code"], "memory_budget_exceeded");
    // A small request still fits beside the large one (and waits for the log too).
    let small = tokio::spawn({
        let (client, url) = (c.client.clone(), c.url("/v1/events"));
        async move { send(&client, &url, &batch(&["budget-small-01"])).await }
    });
    while log.appends.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.release(&gate);
    assert_eq!(small.await.unwrap().status(), 200);
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    // Everything is given back: the retry fits.
    let retry = send(&c.client, &c.url("/v1/events"), &medium).await;
    assert_eq!(retry.status(), 200);
    let events = c.events();
    assert_eq!(count_id(&events, "budget-first-01"), 1);
    assert_eq!(count_id(&events, "budget-second-1"), 1);
    assert_eq!(count_id(&events, "budget-small-01"), 1);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_request_errors_total{code=\"memory_budget_exceeded\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_dev_source_is_not_served_to_the_network_unless_asked() {
    let mut config = tollgate_collector::config::Config::embedded();
    config.server.listen = "0.0.0.0:8080".parse().unwrap();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("server.listen"), "{error}");
    assert!(error.contains("--expose-dev-source"), "{error}");
    config.server.expose_dev_source = true;
    config.validate().unwrap();
    // Loopback needs no flag.
    let mut local = tollgate_collector::config::Config::embedded();
    local.server.listen = "[::1]:8080".parse().unwrap();
    local.validate().unwrap();
}

mod connections {
    //! Clients that hold connections without sending or reading.
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn tight_limits() -> TestCollector {
        TestCollector::start_with(
            |config| {
                config.server.header_read_timeout = Duration::from_millis(300);
                config.server.request_timeout = Duration::from_secs(1);
                config.server.idle_timeout = Duration::from_millis(1500);
                config.idempotency.claim_ttl = Duration::from_secs(5);
            },
            Overrides::default(),
        )
        .await
    }

    /// Reads until the server closes the connection (bounded, so a defect fails the
    /// test instead of hanging it) and returns what it sent.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        let bounded = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        });
        bounded
            .await
            .expect("the collector closes a connection that holds it");
        seen
    }

    #[tokio::test]
    async fn a_client_dribbling_header_bytes_is_cut_off() {
        let c = tight_limits().await;
        let mut stream = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        stream
            .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // One more header byte now and then, never the blank line.
        let dribble = async {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b"X").await.is_err() {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), dribble)
            .await
            .unwrap();
        until_closed(&mut stream).await;
        let metrics = c.metrics().await;
        assert!(
            metrics.contains(
                "tollgate_connections_cut_total{event=\"header_timeout\",listener=\"public\"} 1"
            ) || metrics.contains(
                "tollgate_connections_cut_total{listener=\"public\",event=\"header_timeout\"} 1"
            ),
            "{metrics}"
        );
        // The collector still serves everyone else.
        let (status, _) = c.post_events(&batch(&["after-slowloris"])).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let c = tight_limits().await;
        let mut stream = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        // One whole request, answered; then nothing at all.
        let body = serde_json::to_string(&batch(&["idle-conn-0001"])).unwrap();
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ZGV2Og==\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let seen = until_closed(&mut stream).await;
        assert!(
            String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"),
            "the request was answered before the connection idled out"
        );
        assert_eq!(count_id(&c.events(), "idle-conn-0001"), 1);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_answers_is_cut_off() {
        let c = tight_limits().await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive window, so that unread answers back up quickly.
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(c.addr).await.unwrap();
        let requests = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(256);
        // Pipeline requests and never read: once the server cannot write its answers it
        // stops reading ours, and once the idle timeout passes it closes the connection,
        // after which a write fails.
        let cut = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), stream.write_all(&requests))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    // Blocked: the server stopped reading; keep waiting for the close.
                    Err(_) => {}
                }
            }
        });
        cut.await
            .expect("the collector closes a connection whose client stopped reading");
        let metrics = c.metrics().await;
        assert!(metrics.contains("idle_timeout"), "{metrics}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_unaccepted() {
        let c = TestCollector::start_with(
            |config| config.server.max_connections = std::num::NonZeroUsize::new(2).unwrap(),
            Overrides::default(),
        )
        .await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(c.addr).await.unwrap());
        }
        let open = || async {
            let metrics = c.metrics().await;
            metrics
                .lines()
                .find(|l| l.starts_with("tollgate_connections_open{listener=\"public\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let bounded = tokio::time::timeout(Duration::from_secs(30), async {
            while open().await < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        bounded.await.unwrap();
        assert_eq!(open().await, 2, "four clients, two connections served");
        // Closing the idle ones lets the others (and new clients) in.
        drop(idle);
        let (status, _) = c.post_events(&batch(&["after-the-limit"])).await;
        assert_eq!(status, 200);
    }
}

mod disk_full {
    //! The local log on a filesystem that fills up: a small tmpfs the test mounts.
    use super::*;

    /// Unmounts the tmpfs when the test ends, however it ends.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }

    /// A 2 MiB tmpfs, or `None` (with the reason printed) where mounting is not allowed.
    fn small_filesystem(under: &Path) -> Option<Mounted> {
        let point = under.join("small");
        std::fs::create_dir(&point).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&point)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            Some(Mounted(point))
        } else {
            eprintln!("skipped: mounting a tmpfs needs root (CAP_SYS_ADMIN), which this run lacks");
            None
        }
    }

    /// Writes `path` until the filesystem refuses: big chunks, then page-sized ones.
    fn fill(path: &Path) {
        use std::io::Write;
        let mut file = std::fs::File::create(path).unwrap();
        for chunk in [64 << 10, 4 << 10] {
            let zeros = vec![0u8; chunk];
            while file.write_all(&zeros).is_ok() {}
        }
    }

    fn segment_files(data: &Path) -> usize {
        ["events", "quarantine"]
            .iter()
            .map(|s| tollgate_collector::sink::segments(&data.join(s)).map_or(0, |f| f.len()))
            .sum()
    }

    /// A batch larger than a page, so that it needs new space whatever the last page
    /// of the segment has left.
    fn large_batch(prefix: &str) -> Value {
        let events: Vec<Value> = (0..8)
            .map(|i| {
                let mut e = event(&format!("{prefix}-{i:04}"));
                e["event_name"] = json!("padded_event");
                e["properties"] = json!({"padding": "x".repeat(1024)});
                e
            })
            .collect();
        json!({"events": events})
    }

    #[tokio::test]
    async fn a_full_disk_answers_503_creates_nothing_and_recovers_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mounted) = small_filesystem(dir.path()) else {
            return;
        };
        let data = mounted.0.join("data");
        let mut c = TestCollector::start_in(&data, |_| {}, Overrides::default()).await;
        let (status, _) = c.post_events(&large_batch("before-full")).await;
        assert_eq!(status, 200);

        fill(&mounted.0.join("filler"));
        let files = segment_files(&data);
        for n in 0..5 {
            let (status, answer) = c
                .post_events(&large_batch(&format!("while-full-{n}")))
                .await;
            assert_eq!(status, 503, "{answer}");
            assert_eq!(answer["error"]["code"], "log_unavailable");
        }
        assert_eq!(
            segment_files(&data),
            files,
            "no new files while the disk is full"
        );

        std::fs::remove_file(mounted.0.join("filler")).unwrap();
        let (status, answer) = c.post_events(&large_batch("after-full")).await;
        assert_eq!(status, 200, "{answer}");
        // The retry of a refused batch is accepted now, once.
        let (status, answer) = c.post_events(&large_batch("while-full-0")).await;
        assert_eq!((status, answer["accepted"].as_u64()), (200, Some(8)));
        let events = c.events();
        for id in ["before-full-0000", "after-full-0007", "while-full-0-0003"] {
            assert_eq!(count_id(&events, id), 1, "{id}");
        }
        assert_eq!(count_id(&events, "while-full-1-0000"), 0);
        c.stop().await;
        drop(mounted);
    }
}
