//! The `privacy-check` dry run, through the real binary.

use std::process::Command;

#[test]
fn privacy_check_prints_the_event_as_it_would_be_logged() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"event_id":"evt-00000001","event_name":"item_view","schema_version":1,
            "user_id":"u-42","device_id":"d-1","timestamp_event":"2026-11-29T10:00:00Z",
            "platform":"web","consent":{"analytics":true},
            "context":{"ip":"203.0.113.7","user_agent":"Mozilla/5.0","country":"BR"},
            "properties":{"item_id":"i-1","email":"someone@example.com"}}"#,
    )
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = |region: &str| {
        Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
            .current_dir(&root)
            .args(["privacy-check", "--event"])
            .arg(&event)
            .args(["--region", region])
            .output()
            .unwrap()
    };
    let out = run("DE");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("region eu, policy gdpr@1"), "{stderr}");
    let logged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(logged["context"]["ip"], "203.0.113.0");
    // A region name of the policy file selects the same policy as its countries.
    let by_name = run("eu");
    assert!(by_name.status.success());
    assert!(String::from_utf8_lossy(&by_name.stderr).contains("region eu, policy gdpr@1"));
    let by_name: serde_json::Value = serde_json::from_slice(&by_name.stdout).unwrap();
    assert_eq!(by_name["context"]["ip"], "203.0.113.0");
    // Anything else is refused, naming the regions; never a silent default policy.
    let unknown = run("europe");
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("\"europe\"") && stderr.contains("eu, uk, us_ca, default"),
        "{stderr}"
    );
    assert!(logged["properties"].get("email").is_none());
    assert_eq!(
        logged["user_id"].as_str().unwrap().len(),
        64,
        "pseudonymized"
    );

    // Without analytics consent in the EU the event would not be stored at all.
    let denied = std::fs::read_to_string(&event)
        .unwrap()
        .replace(r#""analytics":true"#, r#""analytics":false"#);
    std::fs::write(&event, denied).unwrap();
    let out = run("DE");
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped: consent_denied"));
}

#[test]
fn check_config_refuses_what_start_up_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let missing = dir.path().join("no-such-privacy.toml");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
            .current_dir(&root)
            .args(args)
            .env("TOLLGATE_PRIVACY__FILE", &missing)
            .env("TOLLGATE_LOG__DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap()
    };
    // A privacy file that is not there: start-up refuses it, and so does check-config.
    let check = run(&["check-config"]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "check-config passed: {stderr}");
    assert!(stderr.contains("no-such-privacy.toml"), "{stderr}");
    let start = run(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    assert!(!start.status.success());
    assert!(String::from_utf8_lossy(&start.stderr).contains("no-such-privacy.toml"));
    // The shipped defaults pass, with the shadow proxy's variables in the same
    // environment (they are not collector keys, and are not read as such).
    let ok = Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .current_dir(&root)
        .arg("check-config")
        .env("TOLLGATE_SHADOW_PROXY_PRIMARY", "http://127.0.0.1:8080")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration OK"));
}
