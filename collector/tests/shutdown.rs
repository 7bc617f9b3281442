//! The real binary under load receives SIGTERM: it stops accepting, drains, flushes and
//! exits 0, and every event it acknowledged is in the log exactly once.

mod support;

use std::collections::HashMap;
use std::process::Command;

use support::{load_then_sigterm, read_lines, spawn_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_binary(dir.path(), &[]);
    let acknowledged = load_then_sigterm(child, &addr).await;
    let logged = read_lines(&dir.path().join("events"));
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for record in &logged {
        *counts
            .entry(record["event_id"].as_str().unwrap())
            .or_default() += 1;
    }
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
