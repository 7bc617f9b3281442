//! End-to-end ingest over real HTTP on 127.0.0.1: what is acknowledged is in the log
//! exactly once, what is rejected is in the quarantine with its reason, and every bad
//! request gets a precise JSON error.

mod support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use time::macros::datetime;
use tollgate_collector::Overrides;
use tollgate_collector::clock::Clock;

use support::*;

/// A collector on the embedded defaults whose server clock the test sets.
async fn start_with_clock(clock: Clock) -> TestCollector {
    let overrides = Overrides {
        clock: Some(clock),
        ..Overrides::default()
    };
    TestCollector::start_with(|_| {}, overrides).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn a_valid_batch_lands_once_and_a_resend_is_duplicate() {
    let c = TestCollector::start().await;
    let body = batch(&["evt-00000001", "evt-00000002", "evt-00000003"]);
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 3);
    assert_eq!(answer["duplicate"], 0);
    assert_eq!(answer["results"][1]["event_id"], "evt-00000002");
    assert_eq!(answer["results"][1]["status"], "accepted");

    // Acknowledged means durable: the lines are on disk before the answer.
    assert_eq!(c.events().len(), 3);

    let (status, again) = c.post_events(&body).await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicate"].as_u64()),
        (Some(0), Some(3))
    );
    let events = c.events();
    assert_eq!(events.len(), 3);
    for id in ["evt-00000001", "evt-00000002", "evt-00000003"] {
        assert_eq!(count_id(&events, id), 1);
    }
    let record = &events[0];
    assert_eq!(record["source"], "dev");
    assert_eq!(record["dedupe"], "checked");
    assert_eq!(record["api"], "native");
    assert_eq!(record["region"], "default");
    assert_eq!(record["properties"]["item_id"], "item-evt-00000001");
    assert!(record["timestamp_server"].is_string());
    assert!(record["request_id"].is_string());
    assert!(record.get("write_key").is_none());
    // The record round-trips through the shared model.
    let parsed: tollgate_event::Record<'static> = serde_json::from_value(record.clone()).unwrap();
    assert_eq!(parsed.event.event_id, "evt-00000001");

    let metrics = c.metrics().await;
    assert!(
        metrics.contains(
            "tollgate_events_total{api=\"native\",outcome=\"accepted\",source=\"dev\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tollgate_events_total{api=\"native\",outcome=\"duplicate\",source=\"dev\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_repeated_event_id_inside_one_batch_is_a_duplicate_of_the_first() {
    let c = TestCollector::start().await;
    let (status, answer) = c
        .post_events(&batch(&["same-id-1", "other-id-2", "same-id-1"]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["duplicate"], 1);
    assert_eq!(answer["results"][2]["status"], "duplicate");
    assert_eq!(count_id(&c.events(), "same-id-1"), 1);
}

#[tokio::test]
async fn good_events_are_accepted_next_to_bad_ones_which_go_to_quarantine() {
    let c = TestCollector::start().await;
    let mut wrong_type = event("bad-type-1");
    wrong_type["schema_version"] = json!("one");
    let mut missing = event("missing-1");
    missing.as_object_mut().unwrap().remove("timestamp_event");
    let mut schema = event("schema-bad-1");
    schema["properties"]["position"] = json!(-4);
    let mut version = event("version-bad-1");
    version["schema_version"] = json!(9);
    let body = json!({"events": [event("good-000001"), wrong_type, missing, schema, version, 17, event("good-000002")]});

    let (status, answer) = c.post("/v1/events", STRICT_KEY, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(2), Some(5))
    );
    let r = &answer["results"];
    let expect = [
        (1, "invalid_type", "/schema_version"),
        (2, "missing_field", "/timestamp_event"),
        (3, "schema_violation", "/properties/position"),
        (4, "unknown_schema_version", "/schema_version"),
        (5, "invalid_event", ""),
    ];
    for (i, code, path) in expect {
        assert_eq!(r[i]["status"], "rejected", "{}", r[i]);
        assert_eq!(r[i]["error"]["code"], code, "{}", r[i]);
        assert_eq!(r[i]["error"]["path"], path, "{}", r[i]);
        assert!(r[i]["error"]["message"].as_str().unwrap().len() > 5);
    }
    assert_eq!(r[1]["event_id"], "bad-type-1");

    let events = c.events();
    assert_eq!(events.len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e["event_id"].as_str().unwrap().starts_with("good-"))
    );
    let quarantine = c.quarantine();
    assert_eq!(quarantine.len(), 5);
    assert_eq!(quarantine[0]["error"]["code"], "invalid_type");
    assert_eq!(quarantine[0]["event"]["event_id"], "bad-type-1");
    assert_eq!(quarantine[0]["index"], 1);
    assert_eq!(quarantine[0]["source"], "strict_app");
    // A non-object event: the policy cannot see into it, so only its size is kept.
    assert_eq!(quarantine[4]["event"]["unparsed"]["bytes"], 2);

    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_events_rejected_total{code=\"schema_violation\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn unknown_events_are_rejected_unless_the_source_allows_them() {
    let c = TestCollector::start().await;
    let mut e = event("unknown-name-1");
    e["event_name"] = json!("brand_new_thing");
    e["properties"] = json!({"anything": true});
    let body = json!({"events": [e]});
    let (_, strict) = c.post("/v1/events", STRICT_KEY, &body).await;
    assert_eq!(strict["results"][0]["error"]["code"], "unknown_event");
    let (_, dev) = c.post("/v1/events", DEV_KEY, &body).await;
    assert_eq!(dev["accepted"], 1, "{dev}");
}

#[tokio::test]
async fn explained_answers_carry_each_events_outcome_region_and_the_source() {
    let c = TestCollector::start().await;
    let mut unknown = event("explain-unknown-1");
    unknown["event_name"] = json!("brand_new_thing");
    let body = json!({"events": [event("explain-good-1"), event("explain-good-1"), unknown]});
    let post = |explain: bool| {
        let request = c
            .client
            .post(c.url("/v1/events"))
            .basic_auth(STRICT_KEY, Some(""))
            .json(&body);
        if explain {
            request.header("x-tollgate-explain", "1")
        } else {
            request
        }
    };
    let plain = post(false).send().await.unwrap();
    assert!(!plain.headers().contains_key("x-tollgate-outcomes"));
    let explained = post(true).send().await.unwrap();
    assert_eq!(explained.headers()["x-tollgate-source"], "strict_app");
    assert_eq!(
        explained.headers()["x-tollgate-outcomes"],
        "duplicate,duplicate,rejected:unknown_event"
    );
    // Segment answers too, where the body says only {"success": true}.
    let segment = c
        .client
        .post(c.url("/v1/batch"))
        .basic_auth(DEV_KEY, Some(""))
        .header("x-tollgate-explain", "1")
        .json(
            &json!({"batch": [{"type": "track", "event": "Promo Shown", "userId": "u-1",
                                 "messageId": "explain-seg-1"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(segment.headers()["x-tollgate-outcomes"], "accepted@default");
    assert_eq!(segment.headers()["x-tollgate-source"], "dev");
}

#[tokio::test]
async fn shadow_copies_can_be_logged_apart_from_real_traffic() {
    let shadow_dir = tempfile::tempdir().unwrap();
    let shadow_path = shadow_dir.path().to_owned();
    let c = TestCollector::start_with(
        |config| {
            config.log.shadow_data_dir = Some(shadow_path);
            // The test's client stands in for a shadow proxy on loopback.
            config.server.shadow_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        },
        tollgate_collector::Overrides::default(),
    )
    .await;
    let (status, _) = c
        .post_events(&json!({"events": [event("real-000001")]}))
        .await;
    assert_eq!(status, 200);
    let copy = c
        .client
        .post(c.url("/v1/events"))
        .basic_auth(DEV_KEY, Some(""))
        .header("x-tollgate-shadow", "1")
        .json(&json!({"events": [event("copy-000001")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(copy.status().as_u16(), 200);
    let ids = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(c.events()), ["real-000001"]);
    assert_eq!(
        ids(read_lines(&shadow_dir.path().join("events"))),
        ["copy-000001"]
    );
}

#[tokio::test]
async fn several_schema_versions_are_live_at_once() {
    let c = TestCollector::start().await;
    let v1 = event("version-one-1");
    let mut v2 = event("version-two-1");
    v2["schema_version"] = json!(2);
    v2["properties"]["ranking_request_id"] = json!("rr-1");
    let mut v2_missing = event("version-two-2");
    v2_missing["schema_version"] = json!(2);
    let (_, answer) = c
        .post(
            "/v1/events",
            STRICT_KEY,
            &json!({"events": [v1, v2, v2_missing]}),
        )
        .await;
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["results"][2]["error"]["code"], "schema_violation");
}

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, body) = into_parts(response).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body
}

#[tokio::test]
async fn every_bad_request_gets_a_precise_json_error_and_is_counted() {
    let c = TestCollector::start_with(
        |config| {
            config.limits.max_body = bytesize::ByteSize::kib(64);
            config.limits.max_events_per_batch = std::num::NonZeroUsize::new(10).unwrap();
        },
        Overrides::default(),
    )
    .await;
    let url = c.url("/v1/events");
    let post = || c.client.post(&url).basic_auth(DEV_KEY, Some(""));

    expect_error(
        post().body("{\"events\": [").send().await.unwrap(),
        400,
        "malformed_json",
    )
    .await;
    expect_error(
        post().body("[1,2]").send().await.unwrap(),
        400,
        "invalid_envelope",
    )
    .await;
    expect_error(
        post().body("{\"sent_at\": null}").send().await.unwrap(),
        400,
        "invalid_envelope",
    )
    .await;
    expect_error(
        post()
            .body("{\"events\": [], \"extra\": 1}")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_envelope",
    )
    .await;
    expect_error(
        post()
            .body("{\"events\": [], \"sent_at\": \"noon\"}")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_sent_at",
    )
    .await;
    let eleven: Vec<String> = (0..11).map(|i| format!("too-many-{i:04}")).collect();
    let ids: Vec<&str> = eleven.iter().map(String::as_str).collect();
    expect_error(
        post().json(&batch(&ids)).send().await.unwrap(),
        413,
        "too_many_events",
    )
    .await;
    let huge = format!("{{\"events\": [], \"pad\": \"{}\"}}", "x".repeat(70_000));
    expect_error(
        post().body(huge.clone()).send().await.unwrap(),
        413,
        "body_too_large",
    )
    .await;
    // Without Content-Length (chunked), the limit still holds.
    let (status, answer) = raw_chunked_post(c.addr, "/v1/events", huge.as_bytes()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    expect_error(
        post()
            .header("content-encoding", "gzip")
            .body("definitely not gzip")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_gzip",
    )
    .await;
    expect_error(
        post()
            .header("content-encoding", "br")
            .body("{}")
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_encoding",
    )
    .await;
    expect_error(
        post()
            .header("content-type", "application/xml")
            .body("<a/>")
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let bomb = gzip(&vec![b' '; 8 << 20]);
    expect_error(
        post()
            .header("content-encoding", "gzip")
            .body(bomb)
            .send()
            .await
            .unwrap(),
        413,
        "decompressed_too_large",
    )
    .await;

    let r = c
        .client
        .post(&url)
        .basic_auth("wk_nobody", Some(""))
        .json(&batch(&["k-00000001"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"tollgate\"");
    expect_error(r, 401, "unknown_write_key").await;
    expect_error(
        c.client
            .post(&url)
            .json(&batch(&["k-00000001"]))
            .send()
            .await
            .unwrap(),
        401,
        "missing_write_key",
    )
    .await;
    let r = c.client.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    expect_error(r, 405, "method_not_allowed").await;
    expect_error(
        c.client.post(c.url("/v2/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;

    // Nothing of all that reached the log.
    assert!(c.events().is_empty());
    assert!(c.quarantine().is_empty());
    let metrics = c.metrics().await;
    for code in [
        "malformed_json",
        "invalid_envelope",
        "invalid_sent_at",
        "too_many_events",
        "body_too_large",
        "invalid_gzip",
        "unsupported_encoding",
        "unsupported_media_type",
        "decompressed_too_large",
        "unknown_write_key",
        "missing_write_key",
        "method_not_allowed",
        "not_found",
    ] {
        assert!(
            metrics.contains(&format!("tollgate_request_errors_total{{code=\"{code}\"}}")),
            "{code} not counted"
        );
    }
}

/// POSTs `body` with `Transfer-Encoding: chunked` over a raw socket.
async fn raw_chunked_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {DEV_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything; ignore write errors.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn an_oversized_event_is_rejected_alone() {
    let c = TestCollector::start().await;
    let mut big = event("big-event-1");
    big["properties"]["item_id"] = json!("x".repeat(40_000));
    let (status, answer) = c
        .post_events(&json!({"events": [big, event("small-event-1")]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0]["error"]["code"], "event_too_large");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(c.quarantine()[0]["error"]["code"], "event_too_large");
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let c = TestCollector::start().await;
    let body = serde_json::to_vec(&batch(&["gz-00000001", "gz-00000002"])).unwrap();
    let response = c
        .client
        .post(c.url("/v1/events"))
        .basic_auth(DEV_KEY, Some(""))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    let (status, answer) = into_parts(response).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    assert_eq!(c.events().len(), 2);
}

#[tokio::test]
async fn ndjson_bodies_take_sent_at_from_a_header_and_reject_bad_lines_alone() {
    let (clock, _) = Clock::manual(datetime!(2026-11-29 12:00 UTC));
    let c = start_with_clock(clock).await;
    let mut text = String::new();
    text.push_str(&serde_json::to_string(&event("nd-00000001")).unwrap());
    text.push_str("\n{not json}\n\n");
    text.push_str(&serde_json::to_string(&event("nd-00000002")).unwrap());
    let response = c
        .client
        .post(c.url("/v1/events"))
        .basic_auth(DEV_KEY, Some(""))
        .header("content-type", "application/x-ndjson")
        .header("x-tollgate-sent-at", "2026-11-29T11:59:00Z")
        .body(text)
        .send()
        .await
        .unwrap();
    let (status, answer) = into_parts(response).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(answer["results"][1]["error"]["code"], "invalid_event");
    let events = c.events();
    assert_eq!(events[0]["clock_skew_ms"], 60_000);
    // A line that is not JSON is never stored: its size and digest are.
    let unparsed = &c.quarantine()[0]["event"]["unparsed"];
    assert_eq!(unparsed["bytes"], 10);
    assert_eq!(unparsed["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn server_time_is_stamped_skew_corrected_and_client_server_fields_are_ignored() {
    let (clock, _) = Clock::manual(datetime!(2026-11-29 12:00:00.123456 UTC));
    let c = start_with_clock(clock).await;

    // Device clock 10 minutes slow; the event happened 30 s before sending.
    let mut skewed = event("skewed-0001");
    skewed["timestamp_event"] = json!("2026-11-29T11:49:30Z");
    skewed["timestamp_server"] = json!("1999-01-01T00:00:00Z");
    skewed["dedupe"] = json!("unchecked");
    // Offline for two days: late.
    let mut late = event("late-000001");
    late["timestamp_event"] = json!("2026-11-27T11:50:00Z");
    // A device clock far in the future with no way to correct it... except sent_at,
    // which is shared by the batch; so this one is only "future" relative to the rest.
    let mut future = event("future-0001");
    future["timestamp_event"] = json!("2026-11-29T12:30:00Z");
    let body = json!({"sent_at": "2026-11-29T11:50:00Z", "events": [skewed, late, future]});
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(status, 200, "{answer}");

    let events = c.events();
    let by_id = |id: &str| events.iter().find(|e| e["event_id"] == id).unwrap().clone();
    let s = by_id("skewed-0001");
    assert_eq!(s["timestamp_server"], "2026-11-29T12:00:00.123456Z");
    assert_eq!(s["sent_at"], "2026-11-29T11:50:00Z");
    assert_eq!(s["clock_skew_ms"], 600_123);
    assert_eq!(s["timestamp_derived"], "2026-11-29T11:59:30.123456Z");
    assert_eq!(s["lateness_ms"], 30_000);
    assert_eq!(s["arrival"], "on_time");
    assert_eq!(s["dedupe"], "checked");
    assert_eq!(by_id("late-000001")["arrival"], "late");
    assert_eq!(by_id("future-0001")["arrival"], "future");
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_client_server_fields_ignored_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn segment_batches_from_unmodified_sdks_are_mapped_and_answered_segment_style() {
    let (clock, _) = Clock::manual(datetime!(2026-11-29 12:00 UTC));
    let c = start_with_clock(clock).await;
    // As analytics-node / analytics.js post it: Basic auth with the write key as user.
    let body = json!({
        "batch": [
            {
                "type": "track",
                "event": "Order Completed",
                "messageId": "node-msg-0001",
                "userId": "u-42",
                "anonymousId": "anon-42",
                "timestamp": "2026-11-29T11:58:00.000Z",
                "properties": {"order_id": "o-1", "revenue": 30.5, "currency": "EUR"},
                "context": {"library": {"name": "analytics-node", "version": "2.1.0"}, "ip": "203.0.113.9"}
            },
            {
                "type": "identify",
                "messageId": "node-msg-0002",
                "userId": "u-42",
                "traits": {"plan": "pro"}
            },
            {
                "type": "track",
                "event": "Order Completed",
                "messageId": "node-msg-0003",
                "userId": "u-42",
                "properties": {"order_id": "o-2"}
            }
        ],
        "sentAt": "2026-11-29T11:59:00.000Z",
        "context": {"app": {"version": "7.0.1"}}
    });
    let (status, answer) = c.post("/v1/batch", STRICT_KEY, &body).await;
    assert_eq!((status, &answer), (200, &json!({"success": true})));

    let events = c.events();
    // identify has no schema in the strict source; the invalid order is quarantined.
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["event_id"], "node-msg-0001");
    assert_eq!(e["event_name"], "order_completed");
    assert_eq!(e["user_id"], "u-42");
    assert_eq!(e["device_id"], "anon-42");
    assert_eq!(e["platform"], "server");
    assert_eq!(e["app_version"], "7.0.1");
    assert_eq!(e["api"], "segment");
    assert_eq!(e["sent_at"], "2026-11-29T11:59:00Z");
    assert_eq!(e["clock_skew_ms"], 60_000);
    assert_eq!(e["timestamp_derived"], "2026-11-29T11:59:00Z");
    assert_eq!(e["context"]["ip"], "203.0.113.9");
    assert_eq!(e["properties"]["revenue"], 30.5);
    let quarantine = c.quarantine();
    let codes: Vec<&str> = quarantine
        .iter()
        .map(|q| q["error"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["unknown_event", "schema_violation"]);

    // Re-sent by the SDK's retry logic: still one copy.
    let (status, _) = c.post("/v1/batch", STRICT_KEY, &body).await;
    assert_eq!(status, 200);
    assert_eq!(c.events().len(), 1);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains(
            "tollgate_events_total{api=\"segment\",outcome=\"duplicate\",source=\"strict_app\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn segment_single_calls_and_body_write_keys() {
    let c = TestCollector::start().await;
    // No messageId: a server id, logged as unchecked. Write key in the body (beacons).
    let r = c
        .client
        .post(c.url("/v1/track"))
        .header("content-type", "text/plain")
        .body(json!({"writeKey": "dev", "event": "Signed Up", "anonymousId": "a-1"}).to_string())
        .send()
        .await
        .unwrap();
    let (status, answer) = into_parts(r).await;
    assert_eq!((status, answer), (200, json!({"success": true})));
    let (status, _) = c
        .post(
            "/v1/page",
            DEV_KEY,
            &json!({"userId": "u-1", "name": "Home", "messageId": "page-msg-1"}),
        )
        .await;
    assert_eq!(status, 200);
    let events = c.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event_name"], "signed_up");
    assert_eq!(events[0]["dedupe"], "unchecked");
    assert_eq!(events[0]["platform"], "unknown");
    assert_eq!(events[1]["event_name"], "page");
    assert_eq!(events[1]["properties"]["name"], "Home");

    let r = c
        .client
        .post(c.url("/v1/track"))
        .body(json!({"writeKey": "nope", "event": "x", "userId": "u"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_failed_log_write_answers_503_releases_claims_and_the_retry_lands_once() {
    let (c, log) = start_with_faulty_log(|_| {}).await;
    log.fail_next.store(1, Ordering::SeqCst);
    let body = batch(&["disk-full-01", "disk-full-02"]);
    let r = send(&c.client, &c.url("/v1/events"), &body).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 503, "log_unavailable").await;
    assert!(c.events().is_empty());
    let ready = c.client.get(c.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "the injected fault is over, so ready again"
    );

    // The claims were released: the retry is accepted, not "duplicate" nor "retry".
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(2)),
        "{answer}"
    );
    assert_eq!(c.events().len(), 2);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_request_errors_total{code=\"log_unavailable\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_partly_delivered_batch_commits_what_landed_so_the_retry_logs_only_the_rest() {
    let (c, log) = start_with_faulty_log(|_| {}).await;
    *log.deliver_only.lock().unwrap() = Some(vec![true, false, true]);
    let body = batch(&["partial-001", "partial-002", "partial-003"]);
    let r = send(&c.client, &c.url("/v1/events"), &body).await;
    expect_error(r, 503, "log_unavailable").await;
    assert_eq!(c.events().len(), 2, "the broker kept two of three");

    let (status, answer) = c.post_events(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicate"].as_u64()),
        (Some(1), Some(2)),
        "{answer}"
    );
    assert_eq!(answer["results"][1]["status"], "accepted");
    let events = c.events();
    for id in ["partial-001", "partial-002", "partial-003"] {
        assert_eq!(count_id(&events, id), 1, "{id} logged exactly once");
    }
}

#[tokio::test]
async fn a_concurrent_send_of_the_same_event_gets_retry_while_the_first_is_written() {
    let (c, log) = start_with_faulty_log(|_| {}).await;
    let gate = log.hold();
    let body = batch(&["race-000001"]);
    let first = {
        let (client, url) = (c.client.clone(), c.url("/v1/events"));
        let body = body.clone();
        tokio::spawn(async move { send(&client, &url, &body).await })
    };
    // Wait until the first request is inside the log append (it holds the claim).
    while log.appends.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let second = send(&c.client, &c.url("/v1/events"), &body).await;
    assert_eq!(second.status().as_u16(), 503);
    assert!(second.headers().contains_key("retry-after"));
    let (_, answer) = into_parts(second).await;
    assert_eq!(answer["retry"], 1, "{answer}");
    assert_eq!(answer["results"][0]["status"], "retry");

    log.release(&gate);
    let (status, answer) = into_parts(first.await.unwrap()).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)));
    let (_, again) = c.post_events(&body).await;
    assert_eq!(again["duplicate"], 1);
    assert_eq!(c.events().len(), 1);
}

#[tokio::test]
async fn a_timed_out_request_still_completes_its_write_and_the_retry_is_a_duplicate() {
    let (c, log) =
        start_with_faulty_log(|config| config.server.request_timeout = Duration::from_millis(300))
            .await;
    let gate = log.hold();
    let body = batch(&["slow-disk-01"]);
    let r = send(&c.client, &c.url("/v1/events"), &body).await;
    expect_error(r, 503, "request_timeout").await;
    log.release(&gate);
    // The detached write finishes and commits; wait for it through the public API.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = c.post_events(&body).await;
        if status == 200 {
            assert_eq!(answer["duplicate"], 1, "{answer}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held write never completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count_id(&c.events(), "slow-disk-01"), 1);
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_with_503() {
    let (c, log) = start_with_faulty_log(|config| {
        config.server.max_concurrent_requests = std::num::NonZeroUsize::new(1).unwrap()
    })
    .await;
    let gate = log.hold();
    let first = {
        let (client, url) = (c.client.clone(), c.url("/v1/events"));
        tokio::spawn(async move { send(&client, &url, &batch(&["shed-000001"])).await })
    };
    while log.appends.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let r = send(&c.client, &c.url("/v1/events"), &batch(&["shed-000002"])).await;
    assert_eq!(r.headers()["retry-after"], "1");
    expect_error(r, 503, "overloaded").await;
    log.release(&gate);
    assert_eq!(first.await.unwrap().status().as_u16(), 200);
    assert_eq!(c.events().len(), 1);
}

#[tokio::test]
async fn probes_and_metrics_live_on_the_admin_listener() {
    let c = TestCollector::start().await;
    let (status, body) = into_parts(c.client.get(c.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) =
        into_parts(c.client.get(c.admin_url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["log"], "ok");
    assert_eq!(body["checks"]["idempotency"]["store"], "memory");
    let r = c.client.get(c.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "metrics are not on the public port"
    );
    let text = c
        .client
        .get(c.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("tollgate_http_requests_total"), "{text}");
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let c = TestCollector::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = send(&client, &c.url("/v1/events"), &batch(&["h2-00000001"])).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(c.events().len(), 1);
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_appending() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = TestCollector::start_in(dir.path(), |_| {}, Overrides::default()).await;
    first
        .post_events(&batch(&["before-restart-1", "before-restart-2"]))
        .await;
    first.stop().await;
    let second = TestCollector::start_in(dir.path(), |_| {}, Overrides::default()).await;
    let (_, answer) = second.post_events(&batch(&["after-restart-1"])).await;
    assert_eq!(answer["accepted"], 1);
    let events = second.events();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["before-restart-1", "before-restart-2", "after-restart-1"]
    );
}

#[tokio::test]
async fn segment_events_validate_against_the_newest_version_they_satisfy() {
    let c = TestCollector::start().await;
    let message = |id: &str, properties: Value| json!({"type": "track", "event": "Item View", "messageId": id, "userId": "u-1", "properties": properties});
    let body = json!({"batch": [
        message("seg-v1-00001", json!({"item_id": "i-1"})),
        message("seg-v2-00001", json!({"item_id": "i-2", "ranking_request_id": "r-9"})),
        message("seg-bad-0001", json!({"position": -1})),
    ]});
    let (status, _) = c.post("/v1/batch", STRICT_KEY, &body).await;
    assert_eq!(status, 200);
    let events = c.events();
    let version = |id: &str| {
        events
            .iter()
            .find(|e| e["event_id"] == id)
            .map(|e| e["schema_version"].clone())
    };
    assert_eq!(version("seg-v1-00001"), Some(json!(1)));
    assert_eq!(version("seg-v2-00001"), Some(json!(2)));
    // Satisfies no version: rejected with the newest version's violation.
    let quarantine = c.quarantine();
    assert_eq!(quarantine.len(), 1);
    assert_eq!(quarantine[0]["error"]["code"], "schema_violation");
}

#[tokio::test]
async fn data_quality_metrics_count_segments_missing_fields_and_lateness_with_bounded_labels() {
    let c = TestCollector::start_with(
        |config| config.telemetry.app_version_labels = 1,
        Overrides::default(),
    )
    .await;
    let mut no_session = event("dq-000001");
    no_session["session_id"] = Value::Null;
    no_session["user_id"] = Value::Null;
    let mut android = event("dq-000002");
    android["platform"] = json!("android");
    android["app_version"] = json!("9.9.9"); // past the one version label: "other"
    let mut unregistered = event("dq-000003");
    unregistered["event_name"] = json!("made_up_event"); // dev source accepts it
    let mut bad_platform = event("dq-000004");
    bad_platform["platform"] = json!("fridge");
    let body = json!({"sent_at": "2026-11-29T10:00:00Z",
                      "events": [event("dq-000000"), no_session, android, unregistered, bad_platform]});
    let (status, answer) = c.post_events(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(4), Some(1))
    );

    let metrics = c.metrics().await;
    let has = |line: &str| {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    };
    let segment = |outcome: &str, name: &str, platform: &str, version: &str, n: u64| {
        format!(
            "tollgate_events_by_segment_total{{app_version=\"{version}\",event_name=\"{name}\",outcome=\"{outcome}\",platform=\"{platform}\"}} {n}"
        )
    };
    has(&segment("accepted", "item_view", "ios", "5.1.0", 2));
    has(&segment("accepted", "item_view", "android", "other", 1));
    has(&segment("accepted", "other", "ios", "5.1.0", 1));
    has(&segment("rejected", "item_view", "other", "5.1.0", 1));
    has("tollgate_event_fields_missing_total{event_name=\"item_view\",field=\"session_id\"} 1");
    has("tollgate_event_fields_missing_total{event_name=\"item_view\",field=\"user_id\"} 1");
    assert!(
        !metrics.contains("field=\"device_id\""),
        "every event had a device_id"
    );
    has("tollgate_event_lateness_seconds_count 4");
    has("tollgate_clock_skew_seconds_count 1");
    assert!(metrics.contains("tollgate_log_queue_depth"), "{metrics}");
}

#[tokio::test]
async fn a_resent_batch_adds_nothing_to_the_data_quality_metrics() {
    let c = TestCollector::start().await;
    let mut no_session = event("dq-resent-01");
    no_session["session_id"] = Value::Null;
    let body = json!({"sent_at": "2026-11-29T10:00:00Z",
                      "events": [event("dq-resent-00"), no_session]});
    for (expected_accepted, expected_duplicate) in [(2, 0), (0, 2)] {
        let (status, answer) = c.post_events(&body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (answer["accepted"].as_u64(), answer["duplicate"].as_u64()),
            (Some(expected_accepted), Some(expected_duplicate))
        );
    }
    // The second copy's events are duplicates found by the idempotency store: what the
    // quality metrics count of them is what they counted of the first copy, once.
    let metrics = c.metrics().await;
    let has = |line: &str| {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    };
    has(
        "tollgate_events_by_segment_total{app_version=\"5.1.0\",event_name=\"item_view\",outcome=\"accepted\",platform=\"ios\"} 2",
    );
    has("tollgate_event_fields_missing_total{event_name=\"item_view\",field=\"session_id\"} 1");
    has("tollgate_event_lateness_seconds_count 2");
    has("tollgate_clock_skew_seconds_count 1");
}
