//! The real binary under load receives SIGTERM: it stops accepting, drains, flushes and
//! exits 0, and every event it acknowledged is in the log exactly once.

mod support;

use std::process::Command;

use support::{assert_logged_exactly_once, load_then_sigterm, read_lines, spawn_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_binary(dir.path(), &[]);
    let acknowledged = load_then_sigterm(child, &addr).await;
    let logged = read_lines(&dir.path().join("events"));
    assert!(acknowledged.len() >= 1000);
    assert_logged_exactly_once(
        &acknowledged,
        logged.iter().map(|r| r["event_id"].as_str().unwrap()),
    );
}

#[test]
fn check_config_reports_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[idempotency]\nclaim_ttl = \"1s\"\n\n[[sources]]\nid = \"Bad Id\"\nwrite_keys = []\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "sources[0].id",
        "sources[0].write_keys",
        "idempotency.claim_ttl",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/collector.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["check-config", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn environment_variables_override_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["check-config", "--config", "config/collector.toml"])
        .env("TOLLGATE_IDEMPOTENCY__CLAIM_TTL", "2s")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a 2s claim TTL is shorter than the request timeout"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("idempotency.claim_ttl"));
}

/// A minimal OTLP/HTTP receiver: keeps every body POSTed to it.
async fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            sink.lock().unwrap().extend_from_slice(&body);
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ingest_request_is_exported_as_a_trace_span_without_event_content() {
    let (endpoint, received) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = support::spawn_binary_with_env(
        dir.path(),
        &[],
        &[("TOLLGATE_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str())],
    );
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/events"))
        .basic_auth("dev", Some(""))
        .json(&support::batch(&["trace-000001", "trace-000002"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // SIGTERM: the collector drains, then flushes its spans before it exits.
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success());

    let body = received.lock().unwrap().clone();
    let contains = |needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
    for needle in [
        "tollgate-collector",
        "ingest",
        "tollgate.source",
        "dev",
        "tollgate.events.accepted",
        "http.response.status_code",
    ] {
        assert!(contains(needle), "the exported spans lack {needle:?}");
    }
    assert!(!contains("item-trace-000001"), "no event content in traces");
}
