//! Property tests over the whole request path (decode → validate → privacy → record),
//! through a real collector, for the native API, Segment, PostHog and Snowplow:
//! arbitrary values in every field, extreme numbers and times, deep nesting,
//! non-objects, and a planted email or phone number somewhere in an event from the EU
//! (from the UK for PostHog and Snowplow, whose events carry no consent: the EU policy
//! would drop them all unwritten, the UK one strips them and writes them).
//!
//! Properties: nothing panics (no 500, the collector keeps serving); every event gets
//! exactly one outcome; the planted value is absent, raw, from every byte written and
//! from the answer; an IP in `context.ip` is never written whole.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tollgate_collector::Overrides;

use support::*;

/// The values planted in one case, distinct from every other case's, so that a leak is
/// pinned on the case that caused it (and shrinking finds the smallest one).
struct Planted {
    email: String,
    phone: String,
    ip: String,
}

impl Planted {
    fn new(case: usize) -> Planted {
        Planted {
            email: format!("planted.{case}@example.org"),
            phone: format!("+44 20 79{:02} {:04}", case / 10_000 % 100, case % 10_000),
            ip: format!("198.51.{}.{}", case / 250 % 250, case % 250 + 1),
        }
    }
}

/// Any JSON value: scalars with extremes, strings with the odd character, nesting.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("9999-12-31T23:59:59-23:59"),
            Just("0000-01-01T00:00:00+23:59"),
            Just("2026-11-29T10:00:00Z"),
            Just("1970-01-01T00:00:00Z"),
            Just(""),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Where the planted value goes: a top-level field, or a key below one.
fn plant(target: &mut Value, field: &str, below: Option<&str>, planted: &str) {
    let text = Value::String(format!("contact {planted} today"));
    match below {
        None => target[field] = text,
        Some(key) => {
            if !target[field].is_object() {
                target[field] = json!({});
            }
            target[field][key] = text;
        }
    }
}

/// A hostile event: a valid template with some fields replaced by anything, extreme
/// times, and one planted value.
#[derive(Debug, Clone)]
struct Hostile {
    /// (field, value) replacements.
    replace: Vec<(String, Value)>,
    /// (field, key below it, which planted value).
    plant: (String, Option<String>, bool),
    /// The whole event is replaced by this (not an object, say) when set.
    whole: Option<Value>,
    sent_at: Option<String>,
}

const NATIVE_FIELDS: &[&str] = &[
    "event_id",
    "event_name",
    "schema_version",
    "user_id",
    "device_id",
    "session_id",
    "timestamp_event",
    "surface",
    "app_version",
    "platform",
    "experiment_ids",
    "consent",
    "context",
    "properties",
    "unknown_extra",
];

const SEGMENT_FIELDS: &[&str] = &[
    "type",
    "event",
    "messageId",
    "userId",
    "anonymousId",
    "timestamp",
    "sentAt",
    "context",
    "properties",
    "traits",
    "unknown_extra",
];

fn hostile(fields: &'static [&'static str]) -> impl Strategy<Value = Hostile> {
    let field = prop::sample::select(fields);
    (
        prop::collection::vec((field.clone(), any_value()), 0..3),
        (field, prop::option::of("[a-z_]{1,8}"), any::<bool>()),
        prop::option::weighted(0.05, any_value()),
        prop::option::of(prop_oneof![
            Just("1990-01-01T00:00:00Z".to_owned()),
            Just("9999-12-31T23:59:59Z".to_owned()),
            Just("0001-01-01T00:00:00Z".to_owned()),
        ]),
    )
        .prop_map(|(replace, (f, below, email), whole, sent_at)| Hostile {
            replace: replace
                .into_iter()
                .map(|(f, v)| (f.to_owned(), v))
                .collect(),
            plant: (f.to_owned(), below, email),
            whole,
            sent_at,
        })
}

impl Hostile {
    fn apply(&self, mut event: Value, planted: &Planted) -> Value {
        for (field, value) in &self.replace {
            event[field] = value.clone();
        }
        let (field, below, email) = &self.plant;
        let value = if *email {
            &planted.email
        } else {
            &planted.phone
        };
        plant(&mut event, field, below.as_deref(), value);
        match &self.whole {
            // The planted values inside a non-object event.
            Some(_) => json!([
                format!("contact {}", planted.email),
                format!("or {}", planted.phone)
            ]),
            None => event,
        }
    }
}

fn native_template(n: usize, planted: &Planted) -> Value {
    let mut e = event(&format!("prop-native-{n:06}"));
    e["context"] = json!({"ip": planted.ip, "locale": "de-DE"});
    e
}

fn segment_template(n: usize, planted: &Planted) -> Value {
    json!({
        "type": "track", "event": "Button Pressed", "messageId": format!("prop-segment-{n:06}"),
        "userId": "u-1", "anonymousId": "a-1", "timestamp": "2026-11-29T10:00:00Z",
        "context": {"ip": planted.ip, "consent": {"categoryPreferences": {"Analytics": true}}},
        "properties": {"button": "share"}
    })
}

const POSTHOG_FIELDS: &[&str] = &[
    "event",
    "distinct_id",
    "$distinct_id",
    "uuid",
    "timestamp",
    "offset",
    "properties",
    "$set",
    "token",
    "type",
    "unknown_extra",
];

const SNOWPLOW_FIELDS: &[&str] = &[
    "e",
    "eid",
    "uid",
    "duid",
    "sid",
    "dtm",
    "stm",
    "ttm",
    "p",
    "aid",
    "ue_pr",
    "co",
    "url",
    "ip",
    "ua",
    "se_ac",
    "tr_tt",
    "unknown_extra",
];

fn posthog_template(n: usize, planted: &Planted) -> Value {
    json!({
        "event": "Button Pressed", "distinct_id": "u-1", "uuid": format!("prop-posthog-{n:06}"),
        "timestamp": "2026-11-29T10:00:00Z",
        "properties": {"$ip": planted.ip, "$lib": "web", "$device_id": "d-1", "button": "share"}
    })
}

fn snowplow_template(n: usize, planted: &Planted) -> Value {
    json!({
        "e": "se", "eid": format!("prop-snowplow-{n:06}"), "uid": "u-1", "duid": "d-1",
        "p": "web", "aid": "shop-web", "ip": planted.ip, "se_ca": "ui", "se_ac": "button_pressed",
        "dtm": "1795946400000", "stm": "1795946401000"
    })
}

/// Everything must hold for one request and what it wrote.
fn check(
    c: &TestCollector,
    (status, answer, outcomes): (u16, String, String),
    events: usize,
    native: bool,
    planted: &[Planted],
) -> Result<(), TestCaseError> {
    let answer = answer.as_str();
    prop_assert!(
        status < 500 || status == 503,
        "a server error: {status} {answer}"
    );
    if status == 200 {
        prop_assert_eq!(
            outcomes.split(',').count(),
            events,
            "outcomes: {}",
            outcomes
        );
    }
    if native && status == 200 {
        let body: Value = serde_json::from_str(answer).unwrap();
        let results = body["results"].as_array().unwrap();
        prop_assert_eq!(results.len(), events, "one outcome per event: {}", answer);
        let counted: u64 = ["accepted", "duplicate", "rejected", "retry"]
            .iter()
            .map(|k| body[k].as_u64().unwrap())
            .sum();
        prop_assert_eq!(counted as usize, events);
    }
    let written = written_under(&c.data);
    for p in planted {
        for value in [&p.email, &p.phone] {
            prop_assert!(
                !answer.contains(value.as_str()),
                "the answer echoes {}: {}",
                value,
                answer
            );
            prop_assert!(!outcomes.contains(value.as_str()), "{}", outcomes);
        }
        for value in [&p.email, &p.phone, &p.ip] {
            prop_assert!(
                !written.contains(value.as_str()),
                "{} reached a file",
                value
            );
        }
    }
    Ok(())
}

fn runner() -> TestRunner {
    // 96 cases in the suite; PROPTEST_CASES=5000 for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// A collector whose every request is from Germany (a trusted edge says so).
async fn eu_collector() -> TestCollector {
    TestCollector::start_with(
        |config| {
            with_policy(config, "127.0.0.1");
        },
        Overrides::default(),
    )
    .await
}

/// Posts `body` from `country`, asking for the per-event outcomes (`X-Tollgate-Explain`:
/// the other protocols' answers carry none in their body). Returns the status, the
/// answer, and the outcomes header.
async fn post(c: &TestCollector, path: &str, country: &str, body: &Value) -> (u16, String, String) {
    let response = c
        .client
        .post(c.url(path))
        .basic_auth(DEV_KEY, Some(""))
        .header("cf-ipcountry", country)
        .header("x-tollgate-explain", "1")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let outcomes = response
        .headers()
        .get("x-tollgate-outcomes")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, response.text().await.unwrap(), outcomes)
}

/// How one API's batches are built and answered.
struct ApiShape {
    fields: &'static [&'static str],
    path: &'static str,
    /// A valid event (message) with the case's IP, by its number.
    template: fn(usize, &Planted) -> Value,
    /// The request body from its events and a send time.
    body: fn(Vec<Value>, Option<&String>) -> Value,
    /// The answer lists per-event results (native); the others answer a status.
    native: bool,
    /// Where the requests come from (the trusted edge's `cf-ipcountry`).
    country: &'static str,
}

/// Sends batches of hostile events of `api` and checks every answer and every byte
/// written (see the module docs).
fn hunt(api: ApiShape) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let c = runtime.block_on(eu_collector());
    let n = std::cell::Cell::new(0);
    runner()
        .run(&prop::collection::vec(hostile(api.fields), 1..4), |batch| {
            let planted: Vec<(usize, Planted)> = batch
                .iter()
                .map(|_| {
                    n.set(n.get() + 1);
                    (n.get(), Planted::new(n.get()))
                })
                .collect();
            let events: Vec<Value> = batch
                .iter()
                .zip(&planted)
                .map(|(h, (i, p))| h.apply((api.template)(*i, p), p))
                .collect();
            let body = (api.body)(events, batch[0].sent_at.as_ref());
            let answered = runtime.block_on(post(&c, api.path, api.country, &body));
            let planted: Vec<Planted> = planted.into_iter().map(|(_, p)| p).collect();
            check(&c, answered, batch.len(), api.native, &planted)
        })
        .unwrap();
    // Still serving.
    let (status, _) = runtime.block_on(c.post_events(&batch(&["prop-after-0001"])));
    assert_eq!(status, 200);
}

#[test]
fn native_batches_of_anything_never_panic_leak_or_lose_an_outcome() {
    hunt(ApiShape {
        fields: NATIVE_FIELDS,
        path: "/v1/events",
        template: native_template,
        body: |events, sent_at| match sent_at {
            Some(sent_at) => json!({"sent_at": sent_at, "events": events}),
            None => json!({"events": events}),
        },
        native: true,
        country: "DE",
    });
}

#[test]
fn segment_batches_of_anything_never_panic_leak_or_lose_an_outcome() {
    hunt(ApiShape {
        fields: SEGMENT_FIELDS,
        path: "/v1/batch",
        template: segment_template,
        body: |messages, sent_at| match sent_at {
            Some(sent_at) => json!({"sentAt": sent_at, "batch": messages}),
            None => json!({"batch": messages}),
        },
        native: false,
        country: "DE",
    });
}

#[test]
fn posthog_batches_of_anything_never_panic_leak_or_lose_an_outcome() {
    hunt(ApiShape {
        fields: POSTHOG_FIELDS,
        path: "/batch/",
        template: posthog_template,
        body: |events, sent_at| match sent_at {
            Some(sent_at) => json!({"api_key": "dev", "sent_at": sent_at, "batch": events}),
            None => json!({"api_key": "dev", "batch": events}),
        },
        native: false,
        country: "GB",
    });
}

#[test]
fn snowplow_posts_of_anything_never_panic_leak_or_lose_an_outcome() {
    hunt(ApiShape {
        fields: SNOWPLOW_FIELDS,
        path: "/com.snowplowanalytics.snowplow/tp2",
        template: snowplow_template,
        body: |events, _| {
            json!({
                "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
                "data": events
            })
        },
        native: false,
        country: "GB",
    });
}
