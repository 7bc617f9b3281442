//! Schema reloads (what SIGHUP does) under load: every request is answered, none with a
//! 5xx, and each request's events are all validated against one schema set, the old or
//! the new, never a mix; a reload that fails keeps the set in force.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_twenty_reloads_each_see_one_whole_schema_set() {
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    std::fs::create_dir_all(schemas.join("reload_probe")).unwrap();
    install(&schemas, &requiring("a"));
    let dir = schemas.clone();
    let c = Arc::new(
        TestCollector::start_with(
            move |config| config.schemas.dir = dir,
            tollgate_collector::Overrides::default(),
        )
        .await,
    );

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
                    .unwrap();
                assert_eq!(reloaded.unwrap(), 1);
            }
        })
    };
    reloads.await.unwrap();
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
}

#[tokio::test]
async fn a_reload_that_fails_keeps_the_schemas_in_force() {
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    std::fs::create_dir_all(schemas.join("reload_probe")).unwrap();
    install(&schemas, &requiring("a"));
    let dir = schemas.clone();
    let c = TestCollector::start_with(
        move |config| config.schemas.dir = dir,
        tollgate_collector::Overrides::default(),
    )
    .await;
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
