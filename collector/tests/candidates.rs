//! Candidate schemas on live traffic: a `v<N>.candidate.json` changes no answer and no
//! record, counts what it would reject and accept per field and keyword (never a
//! value) on `/schemas/candidates` and `/metrics`, keeps its counts over a reload that
//! left it alone, and `schema promote` turns it into a live version — or refuses, when
//! the check fails.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use support::*;

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": true
    })
}

/// v1 live: `price` a number. Candidate v2: `price` at least 0, `currency` required (a
/// breaking step, declared).
fn folder(dir: &Path) {
    let event = dir.join("order_probe");
    std::fs::create_dir_all(&event).unwrap();
    let v1 = schema(json!({"price": {"type": "number"}}), &["price"]);
    let mut v2 = schema(
        json!({"price": {"type": "number", "minimum": 0}, "currency": {"type": "string"}}),
        &["price", "currency"],
    );
    v2["x-tollgate-breaking"] = json!("every order names its currency");
    std::fs::write(event.join("v1.json"), v1.to_string()).unwrap();
    std::fs::write(event.join("v2.candidate.json"), v2.to_string()).unwrap();
}

fn order(id: &str, version: u32, properties: Value) -> Value {
    let mut e = event(id);
    e["event_name"] = json!("order_probe");
    e["schema_version"] = json!(version);
    e["properties"] = properties;
    e
}

async fn start(dir: &Path) -> TestCollector {
    let dir = dir.to_owned();
    TestCollector::start_with(
        move |config| config.schemas.dir = dir,
        tollgate_collector::Overrides::default(),
    )
    .await
}

async fn candidates(c: &TestCollector) -> Value {
    c.client
        .get(c.admin_url("/schemas/candidates"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_candidate_counts_what_it_would_change_and_decides_nothing() {
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    folder(&schemas);
    let c = start(&schemas).await;
    let body = json!({"events": [
        order("cand-00000001", 1, json!({"price": 5, "currency": "EUR"})), // both accept
        order("cand-00000002", 1, json!({"price": -7777, "currency": "EUR"})), // would reject
        order("cand-00000003", 1, json!({"price": 5})),                     // would reject
        order("cand-00000004", 1, json!({"price": "free"})),                // both reject
        order("cand-00000005", 2, json!({"price": 5, "currency": "EUR"})), // would accept
    ]});
    let (status, answer) = c.post("/v1/events", STRICT_KEY, &body).await;
    assert_eq!(status, 200);
    // Exactly what the live schemas say: v1 takes the first three.
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["accepted", "accepted", "accepted", "rejected", "rejected"]
    );
    assert_eq!(
        answer["results"][4]["error"]["code"],
        "unknown_schema_version"
    );
    assert_eq!(c.events().len(), 3);

    let report = candidates(&c).await;
    let candidate = &report["candidates"][0];
    assert_eq!(
        (&candidate["event"], &candidate["version"]),
        (&json!("order_probe"), &json!(2))
    );
    assert_eq!(
        [
            &candidate["checked"],
            &candidate["both_accept"],
            &candidate["would_reject"],
            &candidate["both_reject"],
            &candidate["would_accept"],
        ],
        [&json!(5), &json!(1), &json!(2), &json!(1), &json!(1)]
    );
    let share = candidate["would_reject_share"].as_f64().unwrap();
    assert!((share - 2.0 / 3.0).abs() < 1e-9, "{share}");
    let mut errors: Vec<(String, String, u64)> = candidate["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["keyword"].as_str().unwrap().to_owned(),
                e["events"].as_u64().unwrap(),
            )
        })
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            ("/properties/currency".into(), "required".into(), 1),
            ("/properties/price".into(), "minimum".into(), 1),
        ]
    );
    // The live set's id is beside it, and the accepted records name it.
    assert_eq!(report["schema_set"], c.events()[0]["schema_set"]);

    let metrics = c.metrics().await;
    for line in [
        "tollgate_schema_candidate_events_total{event=\"order_probe\",verdicts=\"would_reject\",version=\"2\"} 2",
        "tollgate_schema_candidate_events_total{event=\"order_probe\",verdicts=\"would_accept\",version=\"2\"} 1",
        "tollgate_schema_candidate_errors_total{event=\"order_probe\",field=\"/properties/price\",keyword=\"minimum\",version=\"2\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // The page for a browser: the worst fields, counts and paths, never a value.
    let page = c
        .client
        .get(c.admin_url("/schemas/candidates"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = page.text().await.unwrap();
    assert!(page.contains("<h2>order_probe v2</h2>"), "{page}");
    assert!(page.contains("<code>/properties/price</code>"), "{page}");
    let json = report.to_string();
    for text in [&page, &json] {
        assert!(!text.contains("7777") && !text.contains("free"), "{text}");
    }
    // Not on the public listener.
    let public = c
        .client
        .get(c.url("/schemas/candidates"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);
}

#[tokio::test]
async fn a_reload_keeps_the_counts_of_an_unchanged_candidate_only() {
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    folder(&schemas);
    let c = start(&schemas).await;
    let body = json!({"events": [order("keep-00000001", 1, json!({"price": -1}))]});
    assert_eq!(c.post("/v1/events", STRICT_KEY, &body).await.0, 200);
    c.reloader.reload().unwrap();
    assert_eq!(candidates(&c).await["candidates"][0]["would_reject"], 1);
    // Edited: a new candidate, counted from zero.
    let path = schemas.join("order_probe/v2.candidate.json");
    let mut v2: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v2["properties"]["price"]["minimum"] = json!(-10);
    std::fs::write(&path, v2.to_string()).unwrap();
    c.reloader.reload().unwrap();
    assert_eq!(candidates(&c).await["candidates"][0]["checked"], 0);
}

fn promote(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .args(["schema", "promote"])
        .args(args)
        .arg("--schemas")
        .arg(dir)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn promote_makes_the_candidate_live_on_the_next_reload() {
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    folder(&schemas);
    let c = start(&schemas).await;
    let v2 =
        json!({"events": [order("promote-0000001", 2, json!({"price": 1, "currency": "EUR"}))]});
    assert_eq!(c.post("/v1/events", STRICT_KEY, &v2).await.1["accepted"], 0);

    let out = promote(&schemas, &["order_probe", "v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("promoted"), "{}", text(&out));
    assert!(schemas.join("order_probe/v2.json").is_file());
    assert!(!schemas.join("order_probe/v2.candidate.json").exists());

    c.reloader.reload().unwrap();
    let (_, answer) = c.post("/v1/events", STRICT_KEY, &v2).await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(candidates(&c).await["candidates"], json!([]));
    // Nothing left to promote.
    assert_eq!(
        promote(&schemas, &["order_probe", "v2"]).status.code(),
        Some(2)
    );
}

#[test]
fn promote_refuses_a_candidate_that_fails_the_check() {
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    folder(&schemas);
    // The breaking step undeclared.
    let path = schemas.join("order_probe/v2.candidate.json");
    let mut v2: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v2.as_object_mut().unwrap().remove("x-tollgate-breaking");
    std::fs::write(&path, v2.to_string()).unwrap();
    let out = promote(&schemas, &["order_probe", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("currency"), "{}", text(&out));
    assert!(path.is_file(), "nothing is renamed");
    // No such candidate, or no such version: usage errors.
    assert_eq!(
        promote(&schemas, &["order_probe", "v3"]).status.code(),
        Some(2)
    );
    assert_eq!(
        promote(&schemas, &["order_probe", "three"]).status.code(),
        Some(2)
    );
}
