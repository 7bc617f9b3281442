//! `tollgate-loadtest verify` through the real binary, on a manifest and logs written
//! here in the collector's formats (the end-to-end runs against a real collector live
//! in the collector's tests).

use std::path::Path;

/// A manifest of two acknowledged events, and a log that holds both.
fn written(dir: &Path) -> std::path::PathBuf {
    let manifest = dir.join("manifest.ndjson");
    std::fs::write(
        &manifest,
        concat!(
            r#"{"seq":0,"retry":false,"status":200,"events":[{"id":"ev-00000001","valid":true,"outcome":"accepted"}]}"#,
            "\n",
            r#"{"seq":1,"retry":false,"status":200,"events":[{"id":"ev-00000002","valid":true,"outcome":"accepted"}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let events = dir.join("log/events");
    std::fs::create_dir_all(&events).unwrap();
    std::fs::write(
        events.join("20261129T100000.000000Z-0000.ndjson"),
        "{\"event_id\":\"ev-00000001\"}\n{\"event_id\":\"ev-00000002\"}\n",
    )
    .unwrap();
    manifest
}

fn verify(manifest: &Path, logs: &[&Path]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-loadtest"));
    command.args(["verify", "--manifest"]).arg(manifest);
    for log in logs {
        command.arg("--log").arg(log);
    }
    command.output().unwrap()
}

#[test]
fn verify_reports_each_log_and_fails_on_any_loss() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = written(dir.path());
    let log = dir.path().join("log");
    let clean = verify(&manifest, &[&log]);
    let out = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{out}");
    assert!(out.contains("lost 0  duplicated 0"), "{out}");
    // A second, empty log (say, a shadow that logged nothing): reported, and failing.
    let empty = tempfile::tempdir().unwrap();
    let both = verify(&manifest, &[&log, empty.path()]);
    let out = String::from_utf8_lossy(&both.stdout);
    assert_eq!(both.status.code(), Some(1), "{out}");
    assert!(
        out.contains("verify: clean") && out.contains("verify: FAILED"),
        "{out}"
    );
}
