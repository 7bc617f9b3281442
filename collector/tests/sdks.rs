//! The official SDKs, unmodified, pointed at a collector on 127.0.0.1: posthog-python
//! and snowplow-tracker (Python) send through `tests/sdk/driver.py`, run from the venv
//! that `scripts/test-deps.sh` creates, and every record they produce is checked field
//! by field.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use support::*;

/// The venv's Python: `TOLLGATE_SDK_PYTHON`, else `~/.cache/tollgate/sdk-venv`.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("TOLLGATE_SDK_PYTHON") {
        return path.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let path = PathBuf::from(home).join(".cache/tollgate/sdk-venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-deps.sh (it installs the PostHog and Snowplow SDKs)",
        path.display()
    );
    path
}

/// Runs the driver against `c` and returns what it says it sent.
async fn drive(c: &TestCollector, kind: &str) -> Vec<Value> {
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/driver.py");
    let run = tokio::process::Command::new(python())
        .arg(driver)
        .arg(kind)
        .arg(format!("http://{}", c.addr))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the SDK driver finishes within a minute")
        .unwrap();
    assert!(
        output.status.success(),
        "driver {kind} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn by_id<'a>(records: &'a [Value], id: &Value) -> &'a Value {
    records
        .iter()
        .find(|r| &r["event_id"] == id)
        .unwrap_or_else(|| panic!("no record {id} in {records:?}"))
}

#[tokio::test]
async fn posthog_python_events_land_as_native_records() {
    let c = TestCollector::start().await;
    let sent = drive(&c, "posthog").await;
    assert_eq!(sent.len(), 4);
    let events = c.events();
    assert_eq!(events.len(), 4, "{events:?}");
    let view = by_id(&events, &sent[0]["id"]);
    assert_eq!(view["api"], "posthog");
    assert_eq!(view["source"], "dev");
    assert_eq!(view["event_name"], "$pageview");
    assert_eq!(view["user_id"], "user-py");
    assert_eq!(view["platform"], "server");
    assert_eq!(view["timestamp_event"], "2026-11-29T11:58:00Z");
    assert_eq!(view["context"]["lib"], "posthog-python");
    assert_eq!(view["context"]["current_url"], "https://shop.example/");
    assert_eq!(view["properties"], json!({"page_kind": "home"}));
    assert!(view["sent_at"].is_string(), "the batch's sent_at: {view}");
    assert_eq!(view["dedupe"], "checked");
    let order = by_id(&events, &sent[1]["id"]);
    assert_eq!(order["event_name"], "order_completed");
    assert_eq!(
        order["properties"],
        json!({"order_id": "o-1", "revenue": 30.5, "currency": "EUR"})
    );
    let played = by_id(&events, &sent[2]["id"]);
    assert_eq!(played["event_name"], "video_played");
    assert_eq!(played["device_id"], "device-py");
    let set = by_id(&events, &sent[3]["id"]);
    assert_eq!(set["event_name"], "$set");
    assert_eq!(set["properties"], json!({"plan": "pro"}));
    // The SDK's API key reached no byte written.
    assert!(!written_under(&c.data).contains("api_key"));
}

#[tokio::test]
async fn snowplow_python_events_land_as_native_records_by_post_and_by_get() {
    let c = TestCollector::start().await;
    for method in ["snowplow-post", "snowplow-get"] {
        let sent = drive(&c, method).await;
        assert_eq!(sent.len(), 3);
        let events = c.events();
        let view = by_id(&events, &sent[0]["id"]);
        assert_eq!(view["api"], "snowplow", "{method}");
        assert_eq!(view["source"], "dev");
        assert_eq!(view["event_name"], "page_view");
        assert_eq!(view["platform"], "server");
        assert_eq!(view["user_id"], "user-sp");
        assert_eq!(view["device_id"], "device-sp");
        assert_eq!(view["context"]["app_id"], "py-app");
        assert_eq!(view["context"]["page_url"], "https://shop.example/");
        assert_eq!(view["context"]["page_title"], "Home");
        assert_eq!(view["context"]["tracker"], "py-1.1.0");
        assert!(view["sent_at"].is_string() && view["clock_skew_ms"].is_i64());
        let basket = by_id(&events, &sent[1]["id"]);
        assert_eq!(basket["event_name"], "add_to_basket");
        assert_eq!(
            basket["properties"],
            json!({"category": "shop", "action": "add-to-basket", "label": "sku-1", "value": 2})
        );
        let order = by_id(&events, &sent[2]["id"]);
        assert_eq!(order["event_name"], "order_completed");
        assert_eq!(order["schema_version"], 1);
        assert_eq!(
            order["properties"],
            json!({"order_id": "o-2", "revenue": 9.5, "currency": "GBP"})
        );
    }
    assert_eq!(c.events().len(), 6);
    assert!(c.quarantine().is_empty());
}
