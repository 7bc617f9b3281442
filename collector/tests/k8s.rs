//! The Kubernetes manifests: every overlay renders with `kubectl kustomize`, validates
//! strictly against the Kubernetes schemas (`kubernetes-validate --strict`, so a
//! misspelled field fails), keeps the hardening the deployment relies on
//! (`k8s/check-manifests.py`), and the collector configuration they mount is one the
//! collector accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| {
        panic!("{command:?} did not start ({e}); scripts/test-deps.sh installs it")
    });
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_overlay_renders_validates_strictly_and_keeps_its_hardening() {
    let overlays: Vec<PathBuf> = std::fs::read_dir(repo().join("k8s/overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(overlays.len() >= 2, "dev and prod overlays: {overlays:?}");
    let dir = tempfile::tempdir().unwrap();
    for overlay in overlays {
        let name = overlay.file_name().unwrap().to_string_lossy().into_owned();
        let rendered = run(Command::new("kubectl").arg("kustomize").arg(&overlay));
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        run(Command::new("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .arg(&file));
        run(Command::new("python3")
            .arg(repo().join("k8s/check-manifests.py"))
            .arg(&file));
        assert!(
            rendered.contains("namespace: tollgate"),
            "{name} sets a namespace"
        );
    }
}

#[test]
fn the_mounted_collector_config_is_valid() {
    // The manifests mount Secrets at /etc/tollgate/secrets; stand in for them here.
    let secrets = tempfile::tempdir().unwrap();
    for source in ["mobile_app", "web"] {
        std::fs::write(secrets.path().join(source), format!("wk_test_{source}\n")).unwrap();
    }
    let text = std::fs::read_to_string(repo().join("k8s/base/collector.toml"))
        .unwrap()
        .replace(
            "/etc/tollgate/secrets/write-keys",
            secrets.path().to_str().unwrap(),
        );
    let file = secrets.path().join("collector.toml");
    std::fs::write(&file, text).unwrap();
    let config = tollgate_collector::config::Config::load(Some(&file)).unwrap();
    config.validate().unwrap();
    assert_eq!(config.sources[0].write_keys, ["wk_test_mobile_app"]);
    assert!(
        config.server.shutdown_timeout < std::time::Duration::from_secs(30),
        "below the pods' terminationGracePeriodSeconds"
    );
}
