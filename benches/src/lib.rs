//! Shared pieces of Tollgate's benchmarks: realistic request bodies, a log that
//! discards, and (in `src/bin/`) the parse-only HTTP baseline the collector is compared
//! with.

use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::json;
use tollgate_collector::sink::{AppendBatch, EventLog, LogError};

/// The repository's example schemas.
pub fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/schemas")
}

/// A native batch of `n` `item_view` events whose ids are unique for each `seq`.
pub fn native_batch(seq: u64, n: usize) -> Vec<u8> {
    let events: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "event_id": format!("bench-{seq:012}-{i:04}"),
                "event_name": "item_view",
                "schema_version": 1,
                "user_id": format!("user-{}", (seq * 7 + i as u64) % 100_000),
                "device_id": "5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d",
                "session_id": "s-8f7d6c5b",
                "timestamp_event": "2026-11-29T10:00:00.250Z",
                "surface": "home_feed",
                "app_version": "5.12.0",
                "platform": "ios",
                "experiment_ids": ["ranker_v7", "feed_density_b"],
                "consent": {"analytics": true, "ads": false},
                "context": {"locale": "en-GB", "country": "GB", "ip": "203.0.113.7",
                            "user_agent": "Tollgate/5.12.0 (iPhone; iOS 19.1)"},
                "properties": {"item_id": format!("item-{i}"), "position": i, "dwell_ms": 1234}
            })
        })
        .collect();
    serde_json::to_vec(&json!({"sent_at": "2026-11-29T10:00:01.000Z", "events": events})).unwrap()
}

/// A Segment `/v1/batch` body of `n` track calls as analytics.js sends them.
pub fn segment_batch(seq: u64, n: usize) -> Vec<u8> {
    let batch: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "type": "track",
                "event": "Item Viewed",
                "messageId": format!("ajs-next-{seq:012}-{i:04}"),
                "anonymousId": "5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d",
                "userId": format!("user-{i}"),
                "timestamp": "2026-11-29T10:00:00.250Z",
                "properties": {"item_id": format!("item-{i}"), "position": i},
                "context": {"library": {"name": "analytics.js", "version": "2.1.0"},
                            "userAgent": "Mozilla/5.0", "locale": "en-GB", "ip": "203.0.113.7",
                            "page": {"path": "/feed", "url": "https://example.com/feed"}}
            })
        })
        .collect();
    serde_json::to_vec(&json!({"batch": batch, "sentAt": "2026-11-29T10:00:01.000Z"})).unwrap()
}

/// A PostHog `/batch/` body of `n` events as posthog-ios sends them.
pub fn posthog_batch(seq: u64, n: usize) -> Vec<u8> {
    let batch: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "event": "item_view",
                "distinct_id": format!("user-{}", (seq * 7 + i as u64) % 100_000),
                "uuid": format!("ph-{seq:012}-{i:04}"),
                "timestamp": "2026-11-29T10:00:00.250Z",
                "properties": {
                    "$lib": "posthog-ios", "$lib_version": "3.9.0", "$os": "iOS",
                    "$device_id": "5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d",
                    "$session_id": "s-8f7d6c5b", "$app_version": "5.12.0",
                    "$ip": "203.0.113.7", "$raw_user_agent": "Tollgate/5.12.0 (iPhone; iOS 19.1)",
                    "item_id": format!("item-{i}"), "position": i, "dwell_ms": 1234
                }
            })
        })
        .collect();
    serde_json::to_vec(
        &json!({"api_key": "dev", "sent_at": "2026-11-29T10:00:01.000Z", "batch": batch}),
    )
    .unwrap()
}

/// A Snowplow `tp2` body of `n` self-describing events as a mobile tracker sends them
/// (the event base64url-encoded in `ue_px`).
pub fn snowplow_batch(seq: u64, n: usize) -> Vec<u8> {
    use base64::Engine;
    let data: Vec<_> = (0..n)
        .map(|i| {
            let event = json!({
                "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                "data": {"schema": "iglu:com.acme/item_view/jsonschema/1-0-0",
                         "data": {"item_id": format!("item-{i}"), "position": i, "dwell_ms": 1234}}
            });
            json!({
                "e": "ue", "eid": format!("sp-{seq:012}-{i:04}"), "aid": "bench", "p": "mob",
                "tv": "ios-6.0.0", "tna": "sp",
                "uid": format!("user-{}", (seq * 7 + i as u64) % 100_000),
                "duid": "5a1e0c8e-2d5b-4a7e-9f0b-6d8f1c2b3a4d", "sid": "s-8f7d6c5b",
                "dtm": "1795946400250", "stm": "1795946401000", "ip": "203.0.113.7",
                "ua": "Tollgate/5.12.0 (iPhone; iOS 19.1)",
                "ue_px": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(event.to_string())
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": data
    }))
    .unwrap()
}

/// A log that accepts everything at once: for measuring the CPU path without a disk.
pub struct DiscardLog;

#[async_trait]
impl EventLog for DiscardLog {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        std::hint::black_box(batch);
        Ok(())
    }

    fn ready(&self) -> bool {
        true
    }

    async fn close(&self) {}
}
