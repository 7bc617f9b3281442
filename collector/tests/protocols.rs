//! The PostHog capture API and the Snowplow tracker protocol over real HTTP on
//! 127.0.0.1, with bodies in the shapes their SDKs send: every event becomes a native
//! record (same validation, idempotency, timing, privacy), duplicates by the protocol's
//! event id are dropped, invalid events are quarantined with their reason, and keys
//! and app ids decide the source.

mod support;

use std::io::Write;

use base64::Engine;
use serde_json::{Value, json};
use time::macros::datetime;
use tollgate_collector::Overrides;
use tollgate_collector::clock::Clock;

use support::*;

/// 2026-11-29T12:00:00Z, the server clock of these tests.
const NOW_MS: i64 = 1_795_953_600_000;

async fn start() -> TestCollector {
    start_tweaked(|_| {}).await
}

async fn start_tweaked(
    tweak: impl FnOnce(&mut tollgate_collector::config::Config),
) -> TestCollector {
    let (clock, _) = Clock::manual(datetime!(2026-11-29 12:00 UTC));
    let overrides = Overrides {
        clock: Some(clock),
        ..Overrides::default()
    };
    TestCollector::start_with(tweak, overrides).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn b64url(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// POSTs `body` as-is with the given content type (and optional query), asking for the
/// per-event outcomes.
async fn post_raw(
    c: &TestCollector,
    path_and_query: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    c.client
        .post(c.url(path_and_query))
        .header("content-type", content_type)
        .header("x-tollgate-explain", "1")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn outcomes(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-tollgate-outcomes")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn record<'a>(records: &'a [Value], id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["event_id"] == id)
        .unwrap_or_else(|| panic!("no record {id} in {records:?}"))
}

fn posthog_batch(key: &str) -> Value {
    json!({
        "api_key": key,
        "sent_at": "2026-11-29T11:59:00+00:00",
        "historical_migration": false,
        "batch": [
            {
                "event": "$pageview",
                "distinct_id": "u-7",
                "uuid": "018f0000-0000-7000-8000-000000000001",
                "timestamp": "2026-11-29T11:58:00+00:00",
                "type": "capture",
                "properties": {
                    "$lib": "web", "$lib_version": "1.200.0", "$os": "Android",
                    "$device_id": "dev-7", "$session_id": "sess-7", "$app_version": "3.1.0",
                    "$ip": "203.0.113.9", "$current_url": "https://shop.example/cart",
                    "page_kind": "cart"
                }
            },
            {
                "event": "Order Completed",
                "distinct_id": "u-7",
                "uuid": "018f0000-0000-7000-8000-000000000002",
                "timestamp": "2026-11-29T11:58:30+00:00",
                "properties": {"$lib": "posthog-python", "order_id": "o-1", "revenue": 12.5, "currency": "EUR"}
            }
        ]
    })
}

#[tokio::test]
async fn posthog_batches_are_mapped_field_by_field_and_retries_count_once() {
    let c = start().await;
    let body = posthog_batch("dev").to_string();
    let r = post_raw(&c, "/batch/", "application/json", body.clone()).await;
    assert_eq!(outcomes(&r), "accepted@default,accepted@default");
    let (status, answer) = into_parts(r).await;
    assert_eq!((status, answer), (200, json!({"status": 1})));

    let events = c.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let view = record(&events, "018f0000-0000-7000-8000-000000000001");
    assert_eq!(view["api"], "posthog");
    assert_eq!(view["source"], "dev");
    assert_eq!(view["event_name"], "$pageview");
    assert_eq!(view["user_id"], "u-7");
    assert_eq!(view["device_id"], "dev-7");
    assert_eq!(view["session_id"], "sess-7");
    assert_eq!(view["app_version"], "3.1.0");
    assert_eq!(view["platform"], "web");
    assert_eq!(view["timestamp_event"], "2026-11-29T11:58:00Z");
    assert_eq!(view["sent_at"], "2026-11-29T11:59:00Z");
    assert_eq!(view["clock_skew_ms"], 60_000);
    assert_eq!(view["context"]["ip"], "203.0.113.9");
    assert_eq!(view["context"]["lib_version"], "1.200.0");
    assert_eq!(view["context"]["current_url"], "https://shop.example/cart");
    assert_eq!(view["properties"], json!({"page_kind": "cart"}));
    assert_eq!(view["dedupe"], "checked");
    let order = record(&events, "018f0000-0000-7000-8000-000000000002");
    assert_eq!(order["event_name"], "order_completed");
    assert_eq!(order["platform"], "server");
    assert_eq!(order["properties"]["revenue"], 12.5);

    // The SDK retries the whole batch: nothing new is logged.
    let r = post_raw(&c, "/batch/", "application/json", body).await;
    assert_eq!(outcomes(&r), "duplicate,duplicate");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(c.events().len(), 2);
    // The API key reached no byte written.
    assert!(!written_under(&c.data).contains("api_key"));
}

#[tokio::test]
async fn posthog_js_bodies_in_every_wrapping_are_understood() {
    let c = start().await;
    let event = |id: &str| json!({"event": "$autocapture", "properties": {"distinct_id": "anon-1", "token": "dev", "$lib": "web", "$event_type": "click"}, "uuid": id, "offset": 2000});
    // An array body, gzipped, sent as text/plain with compression=gzip-js; `_` is the
    // send time (one minute after the server clock: skew -60 s).
    let array = json!([event("js-gzip-000001")]).to_string();
    let r = post_raw(
        &c,
        &format!(
            "/e/?compression=gzip-js&ip=1&_={}&ver=1.200.0",
            NOW_MS + 60_000
        ),
        "text/plain",
        gzip(array.as_bytes()),
    )
    .await;
    assert_eq!(outcomes(&r), "accepted@default");
    // Base64 in a form's `data`.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "data",
            &b64(json!([event("js-form-000002")]).to_string().as_bytes()),
        )
        .finish();
    let r = post_raw(
        &c,
        "/e/?compression=base64",
        "application/x-www-form-urlencoded",
        form,
    )
    .await;
    assert_eq!(outcomes(&r), "accepted@default");
    // One event, base64 in the query of a GET.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("data", &b64(event("js-get-0000003").to_string().as_bytes()))
        .finish();
    let r = c
        .client
        .get(c.url(&format!("/capture/?{query}")))
        .header("x-tollgate-explain", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(outcomes(&r), "accepted@default");
    // A beacon (the page is being left) gets 204 without a body.
    let r = post_raw(
        &c,
        "/e/?beacon=1",
        "text/plain",
        json!([event("js-beacon-00004")]).to_string(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.bytes().await.unwrap().is_empty());
    // lz-string is refused by name.
    let r = post_raw(
        &c,
        "/e/?compression=lz64",
        "application/x-www-form-urlencoded",
        "data=N4Ig",
    )
    .await;
    let (status, answer) = into_parts(r).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (415, Some("unsupported_compression"))
    );

    let events = c.events();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "js-gzip-000001",
            "js-form-000002",
            "js-get-0000003",
            "js-beacon-00004"
        ]
    );
    let first = &events[0];
    assert_eq!(first["event_name"], "$autocapture");
    assert_eq!(first["user_id"], "anon-1");
    assert_eq!(first["clock_skew_ms"], -60_000);
    // `offset` dates the event 2 s before the server received it.
    assert_eq!(first["timestamp_event"], "2026-11-29T11:59:58Z");
    assert_eq!(first["context"]["event_type"], "click");
    assert!(!written_under(&c.data).contains("\"token\""));
}

#[tokio::test]
async fn posthog_keys_decide_the_source_and_must_agree() {
    let c = start().await;
    let post = |body: Value| {
        let c = &c;
        async move { post_raw(c, "/batch", "application/json", body.to_string()).await }
    };
    let e = |token: Option<&str>| {
        let mut e = json!({"event": "x", "distinct_id": "u", "uuid": "018f0000-0000-7000-8000-0000000000aa"});
        if let Some(token) = token {
            e["properties"] = json!({"token": token});
        }
        e
    };
    let mixed = post(json!([e(Some("dev")), e(Some(STRICT_KEY))])).await;
    let (status, answer) = into_parts(mixed).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("mixed_write_keys"))
    );
    let mixed = post(json!({"api_key": "dev", "batch": [e(Some(STRICT_KEY))]})).await;
    assert_eq!(mixed.status().as_u16(), 401);
    let unknown = post(json!({"api_key": "phc_nope", "batch": [e(None)]})).await;
    let (status, answer) = into_parts(unknown).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unknown_write_key"))
    );
    let missing = post(json!({"batch": [e(None)]})).await;
    let (status, answer) = into_parts(missing).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("missing_write_key"))
    );
    assert!(c.events().is_empty());
    assert!(c.quarantine().is_empty());
    // The strict source's key: its events are checked against registered schemas.
    let ok = post(json!({"api_key": STRICT_KEY, "batch": [e(None)]})).await;
    assert_eq!(ok.headers()["x-tollgate-source"], "strict_app");
    assert_eq!(outcomes(&ok), "rejected:unknown_event");
}

#[tokio::test]
async fn invalid_posthog_events_are_quarantined_with_their_reason_and_the_rest_goes_on() {
    let c = start().await;
    let body = json!({
        "api_key": STRICT_KEY,
        "batch": [
            {"event": "Order Completed", "distinct_id": "u-1", "uuid": "018f0000-0000-7000-8000-0000000000b1",
             "properties": {"order_id": "o-1", "revenue": -3, "currency": "EUR", "$ip": "198.51.100.4"}},
            {"event": "Order Completed", "uuid": "018f0000-0000-7000-8000-0000000000b2",
             "properties": {"order_id": "o-2", "revenue": 3, "currency": "EUR"}},
            {"event": "Order Completed", "distinct_id": "u-1", "uuid": "018f0000-0000-7000-8000-0000000000b3",
             "properties": {"order_id": "o-3", "revenue": 3, "currency": "EUR"}}
        ]
    });
    let r = post_raw(&c, "/batch", "application/json", body.to_string()).await;
    assert_eq!(
        outcomes(&r),
        "rejected:schema_violation,rejected:missing_field,accepted@default"
    );
    assert_eq!(r.status().as_u16(), 200);
    let quarantine = c.quarantine();
    assert_eq!(quarantine.len(), 2, "{quarantine:?}");
    assert_eq!(quarantine[0]["error"]["path"], "/properties/revenue");
    assert_eq!(quarantine[0]["event"]["user_id"], "u-1");
    assert_eq!(quarantine[0]["event"]["context"]["ip"], "198.51.100.4");
    assert_eq!(quarantine[1]["error"]["path"], "/distinct_id");
    // Kept under native names, without the key.
    assert_eq!(
        quarantine[1]["event"]["event_id"],
        "018f0000-0000-7000-8000-0000000000b2"
    );
    assert!(!written_under(&c.data).contains(STRICT_KEY));
    assert_eq!(c.events().len(), 1);
}

#[tokio::test]
async fn posthog_and_snowplow_events_from_a_gdpr_region_get_exactly_a_native_events_treatment() {
    let c = TestCollector::start_with(
        |config| drop(with_policy(config, "127.0.0.1")),
        Overrides::default(),
    )
    .await;
    // The same person, page and free text, once as a native event, once as PostHog.
    let native = json!({"events": [{
        "event_id": "native-uk-00001", "event_name": "page_kind_view", "schema_version": 1,
        "user_id": "u-uk", "device_id": "d-uk", "timestamp_event": "2026-11-29T11:00:00Z",
        "platform": "web",
        "context": {"ip": "203.0.113.77", "user_agent": "Mozilla/5.0 (X11; Linux)"},
        "properties": {"email": "ada@example.com", "note": "call +44 20 7946 0958"}
    }]});
    let posthog = json!({"api_key": "dev", "batch": [{
        "event": "page_kind_view", "distinct_id": "u-uk", "uuid": "posthog-uk-0001",
        "timestamp": "2026-11-29T11:00:00Z",
        "properties": {"$device_id": "d-uk", "$lib": "web", "$ip": "203.0.113.77",
                       "$raw_user_agent": "Mozilla/5.0 (X11; Linux)",
                       "email": "ada@example.com", "note": "call +44 20 7946 0958"}
    }]});
    let data = json!({"email": "ada@example.com", "note": "call +44 20 7946 0958"});
    let sde = json!({
        "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
        "data": {"schema": "iglu:com.acme/page_kind_view/jsonschema/1-0-0", "data": data}
    });
    let snowplow = json!({
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": [{"e": "ue", "eid": "snowplow-uk-0001", "aid": "web", "p": "web", "uid": "u-uk",
                  "duid": "d-uk", "dtm": "1795950000000", "ip": "203.0.113.77",
                  "ua": "Mozilla/5.0 (X11; Linux)", "ue_px": b64url(&sde)}]
    });
    for (path, body) in [
        ("/v1/events", native),
        ("/batch", posthog),
        ("/com.snowplowanalytics.snowplow/tp2", snowplow),
    ] {
        let r = c
            .client
            .post(c.url(path))
            .basic_auth(DEV_KEY, Some(""))
            .header("cf-ipcountry", "GB")
            .header("x-tollgate-explain", "1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(outcomes(&r), "accepted@uk", "{path}");
    }
    let events = c.events();
    let (a, b) = (
        record(&events, "native-uk-00001"),
        record(&events, "posthog-uk-0001"),
    );
    for field in [
        "user_id",
        "device_id",
        "privacy_policy",
        "region",
        "properties",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
    assert_eq!(a["context"]["ip"], b["context"]["ip"]);
    assert_eq!(
        a["context"].get("user_agent"),
        b["context"].get("user_agent")
    );
    assert_ne!(b["user_id"], "u-uk", "pseudonymised");
    assert!(!written_under(&c.data).contains("ada@example.com"));
    assert!(!written_under(&c.data).contains("203.0.113.77"));
}

/// A `tp2` body of the given events.
fn tp2(events: Vec<Value>) -> String {
    json!({
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": events
    })
    .to_string()
}

fn checkout(eid: &str, aid: &str, revenue: f64) -> Value {
    let sde = json!({
        "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
        "data": {"schema": "iglu:com.acme/order_completed/jsonschema/1-0-0",
                 "data": {"order_id": "o-9", "revenue": revenue, "currency": "GBP"}}
    });
    let contexts = json!({
        "schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
        "data": [{"schema": "iglu:com.snowplowanalytics.mobile/application/jsonschema/1-0-0",
                  "data": {"version": "6.2.0", "build": "620"}},
                 {"schema": "iglu:com.snowplowanalytics.snowplow/mobile_context/jsonschema/1-0-2",
                  "data": {"osType": "ios", "osVersion": "18.1", "deviceManufacturer": "Apple", "deviceModel": "iPhone"}}]
    });
    json!({
        "e": "ue", "eid": eid, "aid": aid, "p": "mob", "tv": "ios-6.0.0", "tna": "app",
        "uid": "u-9", "duid": "d-9", "sid": "s-9", "ip": "198.51.100.20",
        "dtm": (NOW_MS - 120_000).to_string(), "stm": (NOW_MS - 30_000).to_string(),
        "ue_px": b64url(&sde), "cx": b64url(&contexts)
    })
}

#[tokio::test]
async fn snowplow_posts_are_mapped_and_bound_to_their_source_by_app_id() {
    let c = start().await;
    let body = tp2(vec![
        checkout("3c2b5a0e-0000-4000-8000-000000000001", STRICT_APP, 49.0),
        checkout("3c2b5a0e-0000-4000-8000-000000000002", STRICT_APP, -1.0),
        json!({"e": "pv", "eid": "3c2b5a0e-0000-4000-8000-000000000003", "aid": STRICT_APP, "p": "web",
               "duid": "d-9", "url": "https://shop.example/"}),
    ]);
    let r = post_raw(
        &c,
        "/com.snowplowanalytics.snowplow/tp2",
        "application/json; charset=utf-8",
        body.clone(),
    )
    .await;
    assert_eq!(r.headers()["x-tollgate-source"], "strict_app");
    assert_eq!(
        outcomes(&r),
        "accepted@default,rejected:schema_violation,rejected:unknown_event"
    );
    assert_eq!(r.status().as_u16(), 200);
    let events = c.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["api"], "snowplow");
    assert_eq!(e["event_id"], "3c2b5a0e-0000-4000-8000-000000000001");
    assert_eq!(e["event_name"], "order_completed");
    assert_eq!(e["schema_version"], 1);
    assert_eq!(e["platform"], "ios");
    assert_eq!(e["app_version"], "6.2.0");
    assert_eq!(
        (&e["user_id"], &e["device_id"], &e["session_id"]),
        (&json!("u-9"), &json!("d-9"), &json!("s-9"))
    );
    assert_eq!(e["timestamp_event"], "2026-11-29T11:58:00Z");
    assert_eq!(e["sent_at"], "2026-11-29T11:59:30Z");
    assert_eq!(e["clock_skew_ms"], 30_000);
    assert_eq!(e["context"]["app_id"], STRICT_APP);
    assert_eq!(e["context"]["ip"], "198.51.100.20");
    assert_eq!(e["context"]["mobile_context"]["osVersion"], "18.1");
    assert_eq!(
        e["properties"],
        json!({"order_id": "o-9", "revenue": 49.0, "currency": "GBP"})
    );
    let quarantine = c.quarantine();
    assert_eq!(quarantine[0]["error"]["path"], "/properties/revenue");
    assert_eq!(quarantine[1]["event"]["event_name"], "page_view");

    // The tracker's retry: duplicates by `eid`.
    let r = post_raw(
        &c,
        "/com.snowplowanalytics.snowplow/tp2",
        "application/json",
        body,
    )
    .await;
    assert!(outcomes(&r).starts_with("duplicate,"), "{}", outcomes(&r));
    assert_eq!(c.events().len(), 1);
}

#[tokio::test]
async fn snowplow_pixels_answer_a_gif_that_no_cache_keeps() {
    let c = start().await;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("e", "se")
        .append_pair("eid", "3c2b5a0e-0000-4000-8000-0000000000c1")
        .append_pair("aid", "any-web-app")
        .append_pair("p", "web")
        .append_pair("duid", "d-px")
        .append_pair("se_ca", "video")
        .append_pair("se_ac", "Play Started")
        .append_pair("se_va", "12")
        .finish();
    for path in ["/i", "/com.snowplowanalytics.snowplow/i"] {
        let r = c
            .client
            .get(c.url(&format!("{path}?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("no-store")
        );
        let bytes = r.bytes().await.unwrap();
        assert!(bytes.starts_with(b"GIF89a") && bytes.ends_with(b";"));
    }
    let events = c.events();
    assert_eq!(
        events.len(),
        1,
        "the second pixel is the same event: {events:?}"
    );
    assert_eq!(events[0]["event_name"], "play_started");
    assert_eq!(events[0]["source"], "dev");
    assert_eq!(
        events[0]["properties"],
        json!({"category": "video", "action": "Play Started", "value": 12})
    );
}

#[tokio::test]
async fn unknown_and_mixed_app_ids_are_refused_and_sp_anonymous_drops_identifiers() {
    // No source takes every app id here.
    let c = start_tweaked(|config| {
        config.sources[0].app_ids = vec!["web-dev".into()];
    })
    .await;
    let pv = |eid: &str, aid: &str| json!({"e": "pv", "eid": eid, "aid": aid, "p": "web", "duid": "d-1", "uid": "u-1", "ip": "203.0.113.50"});
    let path = "/com.snowplowanalytics.snowplow/tp2";
    let r = post_raw(
        &c,
        path,
        "application/json",
        tp2(vec![pv("3c2b5a0e-0000-4000-8000-0000000000d1", "stranger")]),
    )
    .await;
    let (status, answer) = into_parts(r).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unknown_app_id"))
    );
    let r = post_raw(
        &c,
        path,
        "application/json",
        tp2(vec![
            pv("3c2b5a0e-0000-4000-8000-0000000000d2", "web-dev"),
            pv("3c2b5a0e-0000-4000-8000-0000000000d3", STRICT_APP),
        ]),
    )
    .await;
    let (status, answer) = into_parts(r).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("mixed_sources"))
    );
    assert!(c.events().is_empty() && c.quarantine().is_empty());

    let r = c
        .client
        .post(c.url(path))
        .header("content-type", "application/json")
        .header("sp-anonymous", "*")
        .body(tp2(vec![pv(
            "3c2b5a0e-0000-4000-8000-0000000000d4",
            "web-dev",
        )]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let events = c.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (&events[0]["user_id"], &events[0]["device_id"]),
        (&Value::Null, &Value::Null)
    );
    assert!(events[0]["context"].get("ip").is_none());
    let written = written_under(&c.data);
    assert!(!written.contains("203.0.113.50") && !written.contains("\"u-1\""));
}
