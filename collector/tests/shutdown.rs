//! The real binary under load receives SIGTERM: it stops accepting, drains, flushes and
//! exits 0, and every event it acknowledged is in the log exactly once.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::{batch, read_lines, schemas_dir};

/// Starts the binary on loopback port 0 and returns it with its public address.
fn spawn_collector(data: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("TOLLGATE_SCHEMAS__DIR", schemas_dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the collector binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the collector logs its address")
            .unwrap();
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "tollgate-collector ready" {
            break entry["fields"]["listen"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_collector(dir.path());
    let url = format!("http://{addr}/v1/events");
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(tokio::sync::Semaphore::new(0));

    let mut clients = Vec::new();
    for client_no in 0..8 {
        let (url, acknowledged, answered) = (url.clone(), acknowledged.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            // Bounded: each client stops at the first refusal or after 2000 batches.
            for n in 0..2000 {
                let ids: Vec<String> = (0..5).map(|i| format!("c{client_no}-b{n}-e{i}")).collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let sent = client
                    .post(&url)
                    .basic_auth("dev", Some(""))
                    .json(&batch(&refs))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 200 {
                    break;
                }
                let body: Value = response.json().await.unwrap();
                for result in body["results"].as_array().unwrap() {
                    if result["status"] == "accepted" {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(result["event_id"].as_str().unwrap().to_owned());
                    }
                }
                answered.add_permits(1);
            }
        }));
    }
    // Load is flowing: 200 batches answered. Now SIGTERM.
    answered.acquire_many(200).await.unwrap().forget();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for client in clients {
        tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .unwrap()
            .unwrap();
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "the collector exits 0 after draining: {exit:?}"
    );

    let logged = read_lines(&dir.path().join("events"));
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for record in &logged {
        *counts
            .entry(record["event_id"].as_str().unwrap())
            .or_default() += 1;
    }
    let acknowledged = acknowledged.lock().unwrap();
    assert!(acknowledged.len() >= 1000);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are missing, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "logged twice: {doubled:?}");
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
