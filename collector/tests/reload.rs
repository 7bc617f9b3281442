//! Reloads (what SIGHUP does): schemas under load — every request is answered, none
//! with a 5xx, each request's events are all validated against one schema set, the old
//! or the new, never a mix, and each record names that set; write keys, privacy
//! policies and rate limits; a reload that fails keeps the rules in force.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use support::*;

/// A schema for `reload_probe` that takes only the property `only`, which it requires.
fn requiring(only: &str) -> String {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {only: {"type": "string"}},
        "required": [only],
        "additionalProperties": false
    })
    .to_string()
}

/// Replaces `reload_probe/v1.json` in one step (written beside the folder, then
/// renamed over the old file), as a deploy tool swapping files does.
fn install(schemas: &Path, text: &str) {
    let staged = schemas.join("../staged.json");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, schemas.join("reload_probe/v1.json")).unwrap();
}

fn probe(id: &str, property: &str) -> Value {
    let mut e = event(id);
    e["event_name"] = json!("reload_probe");
    e["properties"] = json!({property: "x"});
    e
}

/// A collector on a schema folder of its own holding set A (`reload_probe` takes only
/// `a`); returns the folder's owner, the folder and the collector.
async fn on_set_a(
    tweak: impl FnOnce(&mut tollgate_collector::config::Config) + Send + 'static,
) -> (tempfile::TempDir, std::path::PathBuf, TestCollector) {
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    std::fs::create_dir_all(schemas.join("reload_probe")).unwrap();
    install(&schemas, &requiring("a"));
    let dir = schemas.clone();
    let c = TestCollector::start_with(
        move |config| {
            config.schemas.dir = dir;
            tweak(config);
        },
        tollgate_collector::Overrides::default(),
    )
    .await;
    (root, schemas, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_twenty_reloads_each_see_one_whole_schema_set() {
    let (_root, schemas, c) = on_set_a(|_| {}).await;
    let c = Arc::new(c);

    // Four clients, each sending batches with one event only set A takes and one only
    // set B takes: exactly one of the two must be accepted, whichever set is in force.
    // They send until the reloads are over (at most 1000 requests each).
    let answered = Arc::new(AtomicUsize::new(0));
    let reloading = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (c, answered, reloading) = (c.clone(), answered.clone(), reloading.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = [0u32; 2];
            for n in 0..1000 {
                if !reloading.load(Ordering::SeqCst) {
                    break;
                }
                let body = json!({"events": [
                    probe(&format!("reload-{client}-{n:03}-a"), "a"),
                    probe(&format!("reload-{client}-{n:03}-b"), "b"),
                ]});
                let r = c
                    .client
                    .post(c.url("/v1/events"))
                    .basic_auth(STRICT_KEY, Some(""))
                    .header("x-tollgate-explain", "1")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let outcomes = r.headers()["x-tollgate-outcomes"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                match outcomes.as_str() {
                    "accepted@default,rejected:schema_violation" => seen[0] += 1,
                    "rejected:schema_violation,accepted@default" => seen[1] += 1,
                    other => panic!("a request saw a mix of schema sets: {other}"),
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            seen
        }));
    }
    let reloads = {
        let (c, schemas, answered) = (c.clone(), schemas.clone(), answered.clone());
        tokio::spawn(async move {
            // The id of each set: [A, B].
            let mut ids = [String::new(), String::new()];
            for i in 0..20 {
                // A few requests answered under each set before the next reload.
                let before = answered.load(Ordering::SeqCst);
                while answered.load(Ordering::SeqCst) < before + 4 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                install(&schemas, &requiring(if i % 2 == 0 { "b" } else { "a" }));
                let reloader = c.reloader.clone();
                let reloaded = tokio::task::spawn_blocking(move || reloader.reload())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(reloaded.schemas, 1);
                ids[(i + 1) % 2] = reloaded.schema_set;
            }
            ids
        })
    };
    let ids = reloads.await.unwrap();
    assert_ne!(ids[0], ids[1]);
    reloading.store(false, Ordering::SeqCst);
    let mut totals = [0u32; 2];
    for client in clients {
        let seen = client.await.unwrap();
        totals[0] += seen[0];
        totals[1] += seen[1];
    }
    assert!(totals[0] + totals[1] >= 80, "{totals:?}");
    // Both sets were in force while requests came in: the reloads took effect.
    assert!(totals[0] > 0 && totals[1] > 0, "{totals:?}");
    assert!(
        c.metrics()
            .await
            .contains("tollgate_config_reloads_total{outcome=\"reloaded\"} 20"),
    );
    // Each record names the set that accepted it: A takes only `a`, B only `b`.
    let records = c.events();
    assert_eq!(records.len() as u32, totals[0] + totals[1]);
    for record in records {
        let set = if record["properties"].get("a").is_some() {
            &ids[0]
        } else {
            &ids[1]
        };
        assert_eq!(record["schema_set"], set.as_str(), "{record}");
    }
}

#[tokio::test]
async fn a_reload_that_fails_keeps_the_schemas_in_force() {
    let (_root, schemas, c) = on_set_a(|_| {}).await;
    install(&schemas, "{ not json");
    let error = c.reloader.reload().unwrap_err().to_string();
    assert!(error.contains("reload_probe"), "{error}");
    // Set A is still the one in force.
    let (_, answer) = c
        .post(
            "/v1/events",
            STRICT_KEY,
            &json!({"events": [probe("kept-00000001", "a"), probe("kept-00000002", "b")]}),
        )
        .await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["results"][1]["error"]["code"], "schema_violation");
    assert!(
        c.metrics()
            .await
            .contains("tollgate_config_reloads_total{outcome=\"failed\"} 1")
    );
}

fn reload_config(c: &TestCollector, tweak: impl FnOnce(&mut tollgate_collector::config::Config)) {
    let mut config = test_config(&c.data);
    tweak(&mut config);
    c.reloader.reload_from(config).unwrap();
}

#[tokio::test]
async fn reloaded_write_keys_take_effect_for_the_next_request() {
    let c = TestCollector::start().await;
    let body = json!({"events": [event("keys-00000001")]});
    assert_eq!(c.post("/v1/events", "wk_rotated", &body).await.0, 401);
    // The strict source's key is rotated: the new key in, the old one out.
    reload_config(&c, |config| {
        config.sources[1].write_keys = vec!["wk_rotated".into()];
    });
    let (status, answer) = c.post("/v1/events", "wk_rotated", &body).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let (status, answer) = c.post("/v1/events", STRICT_KEY, &body).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["code"], "unknown_write_key");
    assert_eq!(c.events()[0]["source"], "strict_app");
}

#[tokio::test]
async fn a_reloaded_privacy_file_applies_to_the_next_event() {
    let c = TestCollector::start().await;
    let send = |id: &'static str| {
        let mut e = event(id);
        e["user_id"] = json!("user-42");
        e["context"]["country"] = json!("GB");
        json!({"events": [e]})
    };
    assert_eq!(c.post_events(&send("privacy-0000001")).await.0, 200);
    reload_config(&c, |config| {
        with_policy(config, "127.0.0.1/32");
    });
    assert_eq!(c.post_events(&send("privacy-0000002")).await.0, 200);
    let records = c.events();
    assert_eq!(records.len(), 2);
    // Before: no policy, the id as sent. After: the UK policy's pseudonym.
    assert_eq!(records[0]["user_id"], "user-42");
    assert!(records[0]["privacy_policy"].is_null());
    assert_ne!(records[1]["user_id"], "user-42");
    assert_eq!(records[1]["privacy_policy"], "uk_gdpr@1", "{}", records[1]);
    // A privacy file with a problem is refused whole; the UK policy stays.
    let broken = c.data.join("broken-privacy.toml");
    std::fs::write(&broken, "default_region = ").unwrap();
    let mut config = test_config(&c.data);
    config.privacy.file = broken;
    assert!(c.reloader.reload_from(config).is_err());
    assert_eq!(c.post_events(&send("privacy-0000003")).await.0, 200);
    assert_eq!(c.events()[2]["privacy_policy"], "uk_gdpr@1");
}

#[tokio::test]
async fn a_reload_keeps_the_budget_of_unchanged_rate_limits() {
    let (clock, _hand) = tollgate_collector::ratelimit::LimitClock::manual();
    let limited = |config: &mut tollgate_collector::config::Config, burst: u32| {
        let limit = &mut config.sources[1].rate_limit;
        limit.requests_per_second = std::num::NonZeroU32::new(1);
        limit.request_burst = std::num::NonZeroU32::new(burst);
    };
    let c = TestCollector::start_with(
        |config| limited(config, 1),
        tollgate_collector::Overrides {
            limit_clock: Some(clock),
            ..Default::default()
        },
    )
    .await;
    let body = json!({"events": [event("limit-00000001")]});
    assert_eq!(c.post("/v1/events", STRICT_KEY, &body).await.0, 200);
    assert_eq!(c.post("/v1/events", STRICT_KEY, &body).await.0, 429);
    // The same limits again: the spent budget stays spent (a reload is no way around
    // a limit).
    reload_config(&c, |config| limited(config, 1));
    assert_eq!(c.post("/v1/events", STRICT_KEY, &body).await.0, 429);
    // New limits start from their full budget.
    reload_config(&c, |config| limited(config, 3));
    assert_eq!(c.post("/v1/events", STRICT_KEY, &body).await.0, 200);
}

#[tokio::test]
async fn a_reload_names_the_sections_that_need_a_restart_and_applies_the_rest() {
    let c = TestCollector::start().await;
    let mut config = test_config(&c.data);
    config.server.request_timeout = std::time::Duration::from_secs(3);
    config.time.allowed_lateness = std::time::Duration::from_secs(60);
    config.sources[1].write_keys.push("wk_added".into());
    let reloaded = c.reloader.reload_from(config.clone()).unwrap();
    assert_eq!(reloaded.need_restart, ["server", "time"]);
    let body = json!({"events": [event("restart-0000001")]});
    assert_eq!(c.post("/v1/events", "wk_added", &body).await.0, 200);
    // Still not applied, so still named.
    let again = c.reloader.reload_from(config).unwrap();
    assert_eq!(again.need_restart, ["server", "time"]);
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_whole() {
    let c = TestCollector::start().await;
    let mut config = test_config(&c.data);
    config.sources[1].write_keys = vec!["wk_new".into()];
    config.sources.push(config.sources[1].clone());
    let error = c.reloader.reload_from(config).unwrap_err().to_string();
    assert!(error.contains("declared twice"), "{error}");
    let body = json!({"events": [event("invalid-0000001")]});
    assert_eq!(c.post("/v1/events", STRICT_KEY, &body).await.0, 200);
    assert_eq!(c.post("/v1/events", "wk_new", &body).await.0, 401);
}

#[tokio::test]
async fn with_a_watch_interval_a_changed_schema_file_is_reloaded_without_a_signal() {
    let (_root, schemas, c) = on_set_a(|config| {
        config.reload.watch_interval = std::time::Duration::from_millis(20);
    })
    .await;
    let accepted = |answer: &Value| answer["results"][0]["status"] == "accepted";
    let body = |n: u32| json!({"events": [probe(&format!("watch-{n:08}"), "b")]});
    assert!(!accepted(
        &c.post("/v1/events", STRICT_KEY, &body(0)).await.1
    ));
    install(&schemas, &requiring("b"));
    // Polls for up to 10 s: the watcher looks every 20 ms and reloads once the file
    // held still for one more look.
    let mut n = 1;
    while !accepted(&c.post("/v1/events", STRICT_KEY, &body(n)).await.1) {
        assert!(n < 500, "the changed schema was never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        n += 1;
    }
    assert!(
        c.metrics()
            .await
            .contains("tollgate_config_reloads_total{outcome=\"reloaded\"} 1")
    );
}
