//! Privacy policies: golden records per region from the shipped `config/privacy.toml`,
//! consent in each region, keyed pseudonyms and key rotation, spoofed region headers,
//! and an end-to-end scan of every file the collector wrote for raw PII.

mod support;

use serde_json::{Value, json};
use tollgate_collector::Overrides;
use tollgate_collector::privacy::config::PrivacyConfig;
use tollgate_collector::privacy::{Keys, Privacy, Verdict};
use tollgate_event::{Event, Platforms, parse_event};

use support::*;

/// HMAC-SHA256 with key [7; 32] of "u-42" and "d-42", and with key [9; 32], computed
/// independently (Python's `hmac` module).
const U42_K7: &str = "25bc0afbc95f5be20dcf389a9511edae8d756bd6f9bc6ff66fe0aa91cb8af8d8";
const D42_K7: &str = "3e37cf05b77c170200b05a2b7de0f199440e3145222bd9137ee302b2944cf71f";
const U42_K9: &str = "3c70b7e86eea4a8322eee1092581a79b068b09204581adf83651ed7764543e89";
const D42_K9: &str = "396ac68aea6451f1a19192195284e8eb56f288ea16aec5d3d0c61b8652894b80";

fn privacy(previous: bool) -> Privacy {
    let config = PrivacyConfig::load(&shipped_privacy()).unwrap();
    let previous = if previous {
        vec![("k9".to_owned(), vec![9u8; 32])]
    } else {
        vec![]
    };
    Privacy::new(
        &config,
        Keys::new(("k7".to_owned(), vec![7u8; 32]), previous).unwrap(),
    )
    .unwrap()
}

/// An event full of personal data, from `country`, with the given consent.
fn pii_event(country: &str, consent: Value) -> Event {
    let value = json!({
        "event_id": "evt-pii-0001",
        "event_name": "item_view",
        "schema_version": 1,
        "user_id": "u-42",
        "device_id": "d-42",
        "session_id": "s-42",
        "timestamp_event": "2026-11-29T10:00:00Z",
        "platform": "web",
        "consent": consent,
        "context": {"ip": "203.0.113.77", "user_agent": "Mozilla/5.0 (X11; Linux)", "country": country,
                    "traits": {"name": "Ada"}, "locale": "de-DE"},
        "properties": {"item_id": "i-1", "email": "ada@example.com", "phone": "+49 30 1234567",
                       "note": "reach me at ada@example.com or +49 30 1234567"}
    });
    parse_event(value, &Platforms::default()).unwrap().0
}

fn apply(p: &Privacy, event: &mut Event, edge: Option<&str>) -> (String, Verdict) {
    let policy = p.policy_for(edge, &event.context).clone();
    let verdict = p.apply(&policy, event);
    (format!("{}/{}", policy.region, policy.id), verdict)
}

fn fields(event: &Event) -> Value {
    json!({
        "user_id": event.user_id, "device_id": event.device_id, "session_id": event.session_id,
        "context": event.context, "properties": event.properties,
    })
}

#[test]
fn golden_eu() {
    let p = privacy(false);
    let mut e = pii_event("DE", json!({"analytics": true}));
    let (policy, verdict) = apply(&p, &mut e, None);
    assert_eq!(policy, "eu/gdpr@1");
    assert_eq!(verdict, Verdict::Keep { previous: None });
    assert_eq!(
        fields(&e),
        json!({
            "user_id": U42_K7, "device_id": D42_K7, "session_id": "s-42",
            "context": {"ip": "203.0.113.0", "user_agent": "Other on Linux", "country": "DE", "locale": "de-DE"},
            "properties": {"item_id": "i-1", "note": "reach me at [email] or [phone]"}
        })
    );
}

#[test]
fn golden_uk() {
    let p = privacy(false);
    let mut e = pii_event("GB", json!({"analytics": true}));
    let (policy, _) = apply(&p, &mut e, None);
    assert_eq!(policy, "uk/uk_gdpr@1");
    assert_eq!(
        fields(&e),
        json!({
            "user_id": U42_K7, "device_id": D42_K7, "session_id": "s-42",
            "context": {"ip": "203.0.113.0", "country": "GB", "locale": "de-DE"},
            "properties": {"item_id": "i-1", "note": "reach me at [email] or [phone]"}
        })
    );
}

#[test]
fn golden_us_ca_from_a_trusted_edge() {
    let p = privacy(false);
    let mut e = pii_event("US", json!({}));
    let (policy, _) = apply(&p, &mut e, Some("US-CA"));
    assert_eq!(policy, "us_ca/ccpa@1");
    assert_eq!(
        fields(&e),
        json!({
            "user_id": U42_K7, "device_id": "d-42", "session_id": "s-42",
            "context": {"ip": "203.0.113.0", "user_agent": "Mozilla/5.0 (X11; Linux)", "country": "US",
                        "traits": {"name": "Ada"}, "locale": "de-DE"},
            "properties": {"item_id": "i-1",
                           "note": "reach me at [email:c7f22a2b3094d750] or [phone:b13eb5f5b2bd23b6]"}
        })
    );
}

#[test]
fn golden_default() {
    let p = privacy(false);
    let mut e = pii_event("BR", json!({}));
    let (policy, _) = apply(&p, &mut e, None);
    assert_eq!(policy, "default/baseline@1");
    assert_eq!(
        fields(&e),
        json!({
            "user_id": "u-42", "device_id": "d-42", "session_id": "s-42",
            "context": {"ip": "203.0.113.77", "user_agent": "Mozilla/5.0 (X11; Linux)", "country": "BR",
                        "traits": {"name": "Ada"}, "locale": "de-DE"},
            "properties": {"item_id": "i-1", "note": "reach me at ada@example.com or +49 30 1234567"}
        })
    );
}

#[test]
fn consent_denied_granted_and_missing_in_each_region() {
    let p = privacy(false);
    let drop = Verdict::Drop {
        reason: "consent_denied",
    };
    // EU: analytics required, missing counts as denied, denied drops.
    assert_eq!(
        apply(&p, &mut pii_event("FR", json!({"analytics": false})), None).1,
        drop
    );
    assert_eq!(apply(&p, &mut pii_event("FR", json!({})), None).1, drop);
    assert!(matches!(
        apply(&p, &mut pii_event("FR", json!({"analytics": true})), None).1,
        Verdict::Keep { .. }
    ));
    // UK: denied or missing strips identifiers but keeps the event.
    for consent in [json!({"analytics": false}), json!({})] {
        let mut e = pii_event("GB", consent);
        assert!(matches!(apply(&p, &mut e, None).1, Verdict::Keep { .. }));
        assert_eq!((e.user_id, e.device_id, e.session_id), (None, None, None));
        assert!(e.context.get("ip").is_none());
    }
    // California: opt-out; only an explicit "no" to ads strips an ad event.
    let mut ad = pii_event("US", json!({"ads": false}));
    ad.event_name = "ad_click".into();
    apply(&p, &mut ad, Some("US-CA"));
    assert_eq!(ad.user_id, None);
    let mut ad = pii_event("US", json!({}));
    ad.event_name = "ad_click".into();
    apply(&p, &mut ad, Some("US-CA"));
    assert_eq!(ad.user_id.as_deref(), Some(U42_K7));
    // Default region: no consent rules.
    assert!(matches!(
        apply(&p, &mut pii_event("JP", json!({"analytics": false})), None).1,
        Verdict::Keep { .. }
    ));
}

#[test]
fn pseudonyms_are_keyed_and_a_rotation_writes_both() {
    let p = privacy(true);
    let mut e = pii_event("DE", json!({"analytics": true}));
    let (_, verdict) = apply(&p, &mut e, None);
    assert_eq!(e.user_id.as_deref(), Some(U42_K7));
    assert_eq!(p.key_id(), "k7");
    assert_eq!(
        verdict,
        Verdict::Keep {
            previous: Some(
                json!({"k9": {"user_id": U42_K9, "device_id": D42_K9}})
                    .as_object()
                    .unwrap()
                    .clone()
            )
        }
    );
    // Deterministic: the same user always maps to the same pseudonym.
    let mut again = pii_event("AT", json!({"analytics": true}));
    apply(&p, &mut again, None);
    assert_eq!(again.user_id, e.user_id);
}

#[test]
fn the_shipped_policy_file_is_valid_and_bad_files_name_the_problem() {
    let config = PrivacyConfig::load(&shipped_privacy()).unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let mut bad = config.clone();
    bad.regions[0].policy = "nope".into();
    let problems = bad.problems().join("\n");
    assert!(problems.contains("regions[0].policy"), "{problems}");
    // Field paths and proxy addresses are parsed when the file is read: a bad one is
    // refused there, naming the file, the value and the key.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shipped_privacy()).unwrap();
    for (from, to, key) in [
        (
            r#"drop = ["properties.email", "properties.phone", "context.traits"]"#,
            r#"drop = ["event_id"]"#,
            "drop",
        ),
        (
            r#"trusted_proxies = ["10.0.0.0/8""#,
            r#"trusted_proxies = ["not-a-net""#,
            "trusted_proxies",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let error = PrivacyConfig::load(&path).unwrap_err();
        let value = to.split('"').nth(1).unwrap();
        assert!(
            error.contains("bad.toml") && error.contains(value) && error.contains(key),
            "{error}"
        );
    }
}

async fn post_with_header(c: &TestCollector, country: &str, body: &Value) -> Value {
    let r = c
        .client
        .post(c.url("/v1/events"))
        .basic_auth(DEV_KEY, Some(""))
        .header("cf-ipcountry", country)
        .json(body)
        .send()
        .await
        .unwrap();
    into_parts(r).await.1
}

#[tokio::test]
async fn a_region_header_is_believed_only_from_trusted_proxies() {
    let mut event = pii_event_json("spoof-0001");
    event["context"] = json!({"country": "BR", "ip": "203.0.113.9"});
    let body = json!({"events": [event]});

    // 127.0.0.1 is not a trusted proxy: the header is ignored, context.country decides.
    let c = TestCollector::start_with(
        |c| {
            with_policy(c, "10.0.0.0/8");
        },
        Overrides::default(),
    )
    .await;
    post_with_header(&c, "DE", &body).await;
    assert_eq!(c.events()[0]["region"], "default");
    assert_eq!(c.events()[0]["context"]["ip"], "203.0.113.9");

    // Trusted: the edge's country wins.
    let c = TestCollector::start_with(
        |c| {
            with_policy(c, "127.0.0.1/32");
        },
        Overrides::default(),
    )
    .await;
    let answer = post_with_header(&c, "DE", &body).await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    let record = &c.events()[0];
    assert_eq!(
        (record["region"].as_str(), record["privacy_policy"].as_str()),
        (Some("eu"), Some("gdpr@1"))
    );
    assert_eq!(record["context"]["ip"], "203.0.113.0");
    assert_eq!(record["privacy_key"], "generated");
}

fn pii_event_json(id: &str) -> Value {
    json!({
        "event_id": id,
        // No registered schema: the dev source accepts it on the base model.
        "event_name": "profile_updated",
        "schema_version": 1,
        "user_id": "user-raw-4242",
        "device_id": "device-raw-4242",
        "timestamp_event": "2026-11-29T10:00:00Z",
        "platform": "ios",
        "consent": {"analytics": true},
        "context": {"ip": "198.51.100.123", "user_agent": "RawAgent/9.9 (secret-device)", "country": "DE"},
        "properties": {"item_id": "i-1", "email": "raw.person@example.org", "phone": "+33 6 12 34 56 78",
                       "comment": "write to other.person@example.net, card 4111 1111 1111 1111"}
    })
}

#[tokio::test]
async fn no_raw_pii_the_policy_names_reaches_any_file() {
    let c = TestCollector::start_with(
        |c| {
            with_policy(c, "10.0.0.0/8");
        },
        Overrides::default(),
    )
    .await;
    let good = pii_event_json("pii-good-0001");
    // Invalid (wrong schema_version type): goes to the quarantine, through the policy too.
    let mut bad = pii_event_json("pii-bad-00001");
    bad["schema_version"] = json!("one");
    // No consent in the EU: dropped, stored nowhere.
    let mut denied = pii_event_json("pii-denied-01");
    denied["consent"] = json!({"analytics": false});
    denied["user_id"] = json!("user-denied-7777");
    let answer = c
        .post_events(&json!({"events": [good, bad, denied]}))
        .await
        .1;
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(2)),
        "{answer}"
    );
    assert_eq!(answer["results"][2]["error"]["code"], "consent_denied");
    assert_eq!(c.quarantine().len(), 1);

    let written = written_under(&c.data);
    assert!(
        written.contains("pii-good-0001") && written.contains("pii-bad-00001"),
        "the scan read the log"
    );
    for raw in [
        "user-raw-4242",
        "device-raw-4242",
        "198.51.100.123",
        "RawAgent",
        "raw.person@example.org",
        "+33 6 12 34 56 78",
        "other.person@example.net",
        "4111 1111 1111 1111",
        "user-denied-7777",
        "pii-denied-01",
    ] {
        assert!(!written.contains(raw), "{raw:?} reached a file");
    }
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_privacy_drops_total{reason=\"consent_denied\"} 1"),
        "{metrics}"
    );
}

mod properties {
    //! Whatever an event holds, nothing a policy drops survives it.
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    const POLICY: &str = r#"
        default_region = "default"
        [[regions]]
        name = "default"
        countries = []
        policy = "strict"
        [policies.strict]
        version = 1
        drop = ["properties.email", "properties.*.token", "context.traits", "session_id"]
        pseudonymize = ["user_id", "properties.account.*"]
        ip = "truncate"
        missing_consent_granted = true
    "#;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9@.+ -]{0,20}".prop_map(Value::from),
        ]
    }

    fn object(keys: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
        let value = leaf().prop_recursive(3, 16, 4, move |inner| {
            proptest::collection::btree_map(proptest::sample::select(keys), inner, 0..4).prop_map(
                |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
            )
        });
        proptest::collection::btree_map(proptest::sample::select(keys), value, 0..6)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn no_token_below(map: &Map<String, Value>) -> bool {
        map.values().all(|v| match v {
            Value::Object(child) => !child.contains_key("token"),
            _ => true,
        })
    }

    proptest! {
        #[test]
        fn dropped_fields_never_survive(
            properties in object(&["email", "token", "account", "item_id", "note"]),
            context in object(&["traits", "ip", "token", "locale"]),
            ip in proptest::option::of(any::<std::net::Ipv4Addr>()),
        ) {
            let config: PrivacyConfig = {
                use figment::providers::{Format, Toml};
                figment::Figment::from(Toml::string(POLICY)).extract().unwrap()
            };
            let p = Privacy::new(&config, Keys::new(("k".into(), vec![1; 32]), vec![]).unwrap()).unwrap();
            let mut raw = json!({
                "event_id": "evt-prop-0001", "event_name": "anything", "schema_version": 1,
                "user_id": "raw-user", "session_id": "s-1", "timestamp_event": "2026-11-29T10:00:00Z",
                "platform": "web", "context": context, "properties": properties,
            });
            if let Some(ip) = ip {
                raw["context"]["ip"] = json!(ip.to_string());
            }
            let mut event = parse_event(raw.clone(), &Platforms::default()).unwrap().0;
            let policy = p.policy_for(None, &event.context).clone();
            let kept = matches!(p.apply(&policy, &mut event), Verdict::Keep { .. });
            prop_assert!(kept);
            prop_assert!(!event.properties.contains_key("email"));
            prop_assert!(no_token_below(&event.properties));
            prop_assert!(!event.context.contains_key("traits"));
            prop_assert_eq!(event.session_id, None);
            prop_assert_ne!(event.user_id.as_deref(), Some("raw-user"));
            if let Some(Value::String(ip)) = event.context.get("ip") {
                prop_assert!(ip.ends_with(".0"), "{ip}");
            }
            // The quarantine path keeps the same promise on the raw event.
            p.apply_raw(&policy, &mut raw);
            let props = raw["properties"].as_object().unwrap();
            prop_assert!(!props.contains_key("email"));
            prop_assert!(no_token_below(props));
            prop_assert!(raw["context"].get("traits").is_none());
            prop_assert!(raw.get("session_id").is_none());
        }
    }
}

#[tokio::test]
async fn the_generated_key_is_kept_private_and_reused_after_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let user_pseudonym = |c: &TestCollector| {
        c.events().last().unwrap()["user_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut first = TestCollector::start_in(
        dir.path(),
        |c| {
            with_policy(c, "10.0.0.0/8");
        },
        Overrides::default(),
    )
    .await;
    first
        .post_events(&json!({"events": [pii_event_json("restart-key-1")]}))
        .await;
    let before = user_pseudonym(&first);
    first.stop().await;
    let key = dir.path().join("privacy/hmac-generated.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap().len(), 64);

    let second = TestCollector::start_in(
        dir.path(),
        |c| {
            with_policy(c, "10.0.0.0/8");
        },
        Overrides::default(),
    )
    .await;
    second
        .post_events(&json!({"events": [pii_event_json("restart-key-2")]}))
        .await;
    assert_ne!(before, "user-raw-4242");
    assert_eq!(
        user_pseudonym(&second),
        before,
        "the same user keeps the same pseudonym"
    );
}

#[tokio::test]
async fn a_key_from_the_collector_config_replaces_the_generated_one_for_every_replica() {
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("hmac");
    std::fs::write(&key_file, "ab".repeat(32)).unwrap();
    let key = tollgate_collector::privacy::config::KeyConfig {
        id: "k8s2026".into(),
        file: Some(key_file),
        env: None,
    };
    let mut pseudonyms = Vec::new();
    // Two replicas with their own data dirs: the same key, the same pseudonym.
    for _ in 0..2 {
        let key = key.clone();
        let c = TestCollector::start_with(
            move |c| {
                with_policy(c, "10.0.0.0/8");
                c.privacy.hmac_key = Some(key);
            },
            Overrides::default(),
        )
        .await;
        let answer = c
            .post_events(&json!({"events": [pii_event_json("key-000001")]}))
            .await
            .1;
        assert_eq!(answer["accepted"], 1, "{answer}");
        let record = &c.events()[0];
        assert_eq!(record["privacy_key"], "k8s2026");
        assert!(!c.data.join("privacy/hmac-generated.key").exists());
        pseudonyms.push(record["user_id"].clone());
    }
    assert_ne!(pseudonyms[0], "user-raw-4242");
    assert_eq!(pseudonyms[0], pseudonyms[1]);
}

/// Generated ids are digit groups more often than not (`<run>-<shard>-<seq>`, a time
/// and a counter, a 16-digit snowflake): the policy must neither reject an event for
/// its `event_id` nor rewrite a session id because they look like numbers. An email, an
/// international number or a dashed phone number in an id still counts.
#[test]
fn generated_ids_are_not_taken_for_personal_data() {
    let p = privacy(false);
    for id in [
        "run4242-17-1-3-4",
        "1732900000-000123",
        "4111111111111111",
        "2026-11-30-000017",
        "0b7e5f3c-6c1d-4b8e-9a52-1f7c2d3e4a5b",
    ] {
        let mut e = pii_event("GB", json!({"analytics": true}));
        e.event_id = id.into();
        e.session_id = Some(id.into());
        let (_, verdict) = apply(&p, &mut e, None);
        assert_eq!(verdict, Verdict::Keep { previous: None }, "{id}");
        assert_eq!(e.event_id, id);
        assert_eq!(e.session_id.as_deref(), Some(id), "{id}");
    }
    for id in ["jane@example.com", "+44 20 7946 0958", "415-555-0132"] {
        let mut e = pii_event("GB", json!({"analytics": true}));
        e.event_id = id.into();
        let (_, verdict) = apply(&p, &mut e, None);
        assert!(matches!(verdict, Verdict::Reject(_)), "{id}: {verdict:?}");
    }
}
