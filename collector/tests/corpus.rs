//! The bad-input corpus (`tests/corpus/bad-input.jsonl`, one case per line) replayed
//! over a real socket: each case gets its documented status and error code, no answer
//! echoes what the client sent, and what was acknowledged before stays logged once.

mod support;

use std::io::Write;
use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};
use tollgate_collector::Overrides;

use support::*;

/// Values planted in the corpus bodies; no answer may contain them.
const PLANTED: &[&str] = &["jane@example.com", "jane @example.com"];

/// One case of the corpus.
struct Case {
    name: String,
    method: reqwest::Method,
    path: String,
    line: Value,
}

fn corpus() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bad-input.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            let (method, path) = line["route"].as_str().unwrap().split_once(' ').unwrap();
            Case {
                name: line["name"].as_str().unwrap().to_owned(),
                method: method.parse().unwrap(),
                path: path.to_owned(),
                line,
            }
        })
        .collect()
}

/// The request body a case describes: `body` (text), `body_base64` (bytes),
/// `body_parts` (text, and `[text, times]` repeats), or `event` (fields set on a valid
/// event, sent in an envelope with the case's `sent_at`); gzipped when `gzip`.
fn body_of(case: &Case) -> Vec<u8> {
    let line = &case.line;
    let mut body = if let Some(text) = line["body"].as_str() {
        text.as_bytes().to_vec()
    } else if let Some(b64) = line["body_base64"].as_str() {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    } else if let Some(parts) = line["body_parts"].as_array() {
        let mut out = String::new();
        for part in parts {
            match part {
                Value::String(s) => out.push_str(s),
                Value::Array(repeat) => out.push_str(
                    &repeat[0]
                        .as_str()
                        .unwrap()
                        .repeat(repeat[1].as_u64().unwrap() as usize),
                ),
                other => panic!("{}: bad part {other}", case.name),
            }
        }
        out.into_bytes()
    } else if let Some(fields) = line["event"].as_object() {
        let mut e = event(&format!("corpus-{}", case.name.replace('_', "-")));
        for (k, v) in fields {
            e[k] = v.clone();
        }
        let mut text = json!({"events": [e]}).to_string();
        if let Some(sent_at) = line["sent_at"].as_str() {
            text = json!({"sent_at": sent_at, "events": [e]}).to_string();
        }
        text.replace("PADDING_40000", &"x".repeat(40_000))
            .into_bytes()
    } else {
        Vec::new()
    };
    if line["gzip"].as_bool() == Some(true) {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        body = encoder.finish().unwrap();
    }
    body
}

async fn replay(c: &TestCollector, case: &Case) -> (u16, String) {
    let mut request = c.client.request(case.method.clone(), c.url(&case.path));
    match case.line["auth"].as_str() {
        Some("none") => {}
        Some(key) => request = request.basic_auth(key, Some("")),
        None => request = request.basic_auth(DEV_KEY, Some("")),
    }
    request = request.header("cf-ipcountry", "DE");
    let mut content_type = false;
    if let Some(headers) = case.line["headers"].as_object() {
        for (name, value) in headers {
            content_type |= name == "content-type";
            request = request.header(name, value.as_str().unwrap());
        }
    }
    if !content_type {
        request = request.header("content-type", "application/json");
    }
    if case.line["gzip"].as_bool() == Some(true) {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.body(body_of(case)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn every_bad_input_gets_its_documented_answer_and_loses_nothing() {
    // Every request comes from Germany (a trusted edge says so): the EU policy, which
    // removes personal data from what is written, applies to every case.
    let c = TestCollector::start_with(
        |config| {
            with_policy(config, "127.0.0.1");
        },
        Overrides::default(),
    )
    .await;
    let (status, _) = c.post_events(&batch(&["acked-before-01"])).await;
    assert_eq!(status, 200);

    let cases = corpus();
    assert!(cases.len() >= 40, "the corpus is all there");
    let mut failures = Vec::new();
    for case in &cases {
        let (status, text) = replay(&c, case).await;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let want_status = case.line["status"].as_u64().unwrap() as u16;
        let got_code = if let Some(code) = case.line["code"].as_str() {
            (answer["error"]["code"].as_str() == Some(code), code)
        } else if let Some(code) = case.line["event_code"].as_str() {
            (
                answer["results"][0]["error"]["code"].as_str() == Some(code),
                code,
            )
        } else {
            // Segment routes answer success whatever the per-event outcome.
            (answer == json!({"success": true}), "success")
        };
        if status != want_status || !got_code.0 {
            failures.push(format!(
                "{}: expected {want_status} {}, got {status} {text}",
                case.name, got_code.1
            ));
        }
        if let Some(planted) = PLANTED.iter().find(|p| text.contains(*p)) {
            failures.push(format!(
                "{}: the answer echoes {planted:?}: {text}",
                case.name
            ));
        }
        if status >= 400 && answer["error"]["message"].as_str().is_none() {
            failures.push(format!("{}: no JSON error: {text}", case.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // Nothing acknowledged before is lost, nothing written holds a planted value,
    // and the collector still serves.
    let (status, _) = c.post_events(&batch(&["acked-after-001"])).await;
    assert_eq!(status, 200);
    let events = c.events();
    assert_eq!(count_id(&events, "acked-before-01"), 1);
    assert_eq!(count_id(&events, "acked-after-001"), 1);
    let written = written_under(&c.data);
    assert!(
        !written.contains("jane@example.com"),
        "a planted value reached a file"
    );
    assert!(
        !c.quarantine().is_empty(),
        "the per-event cases reached the quarantine"
    );
}
