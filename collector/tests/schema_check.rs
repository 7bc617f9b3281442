//! `tollgate-collector schema check` through the real binary: the shipped schemas pass
//! (this is the CI gate for config/schemas), a breaking step fails naming the event, the
//! property and the rule unless the new version declares it, versions edited in place
//! or deleted fail against the previous state, and usage errors exit 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["schema", "check"])
        .args(args)
        .output()
        .unwrap()
}

fn write(dir: &Path, event: &str, version: u32, schema: &Value) {
    std::fs::create_dir_all(dir.join(event)).unwrap();
    std::fs::write(
        dir.join(event).join(format!("v{version}.json")),
        serde_json::to_string_pretty(schema).unwrap(),
    )
    .unwrap();
}

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_shipped_schemas_pass() {
    let out = check(&["--schemas", "config/schemas"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Without --schemas, the configuration's folder: the same one by default.
    assert_eq!(check(&[]).status.code(), Some(0));
}

#[test]
fn a_breaking_step_fails_unless_the_new_version_declares_it() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = schema(
        json!({"item_id": {"type": "string"}, "position": {"type": "integer"}}),
        &["item_id"],
    );
    write(dir.path(), "item_view", 1, &v1);
    // v2 drops `position` and adds an optional property.
    let mut v2 = schema(
        json!({"item_id": {"type": "string"}, "surface": {"type": "string"}}),
        &["item_id"],
    );
    write(dir.path(), "item_view", 2, &v2);
    let folder = dir.path().to_str().unwrap();
    let out = check(&["--schemas", folder]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("item_view v2 property `position`") && said.contains("property_removed"),
        "{said}"
    );
    assert!(
        said.contains("ok: item_view v2 property `surface`"),
        "{said}"
    );

    let json_out = check(&["--schemas", folder, "--json"]);
    let report: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(report["schemas"], 2);
    let violation = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["level"] == "violation")
        .unwrap();
    assert_eq!(
        (
            &violation["event"],
            &violation["property"],
            &violation["rule"]
        ),
        (
            &json!("item_view"),
            &json!("position"),
            &json!("property_removed")
        )
    );

    v2["x-tollgate-breaking"] = json!("position moved to the ranking log");
    write(dir.path(), "item_view", 2, &v2);
    let out = check(&["--schemas", folder]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("declared: item_view v2 property `position`"));
}

#[test]
fn against_the_previous_state_versions_change_only_compatibly_and_stay() {
    let before = tempfile::tempdir().unwrap();
    let v1 = schema(
        json!({"item_id": {"type": "string"}, "kind": {"type": "string", "enum": ["a", "b"]}}),
        &["item_id"],
    );
    write(before.path(), "item_view", 1, &v1);
    write(before.path(), "share_submit", 1, &schema(json!({}), &[]));
    let after = tempfile::tempdir().unwrap();
    // Edited in place: an enum value removed (breaking, even if declared), and the
    // share_submit version deleted.
    let mut edited = schema(
        json!({"item_id": {"type": "string"}, "kind": {"type": "string", "enum": ["a"]}}),
        &["item_id"],
    );
    edited["x-tollgate-breaking"] = json!("declaring does not excuse an in-place edit");
    write(after.path(), "item_view", 1, &edited);
    let (a, b): (PathBuf, PathBuf) = (after.path().into(), before.path().into());
    let out = check(&[
        "--schemas",
        a.to_str().unwrap(),
        "--against",
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("edited in place, breaking: enum values removed"),
        "{said}"
    );
    assert!(
        said.contains("share_submit v1") && said.contains("version_deleted"),
        "{said}"
    );

    // A compatible in-place edit passes.
    let mut widened = v1.clone();
    widened["properties"]["kind"]["enum"] = json!(["a", "b", "c"]);
    write(after.path(), "item_view", 1, &widened);
    write(after.path(), "share_submit", 1, &schema(json!({}), &[]));
    let out = check(&[
        "--schemas",
        a.to_str().unwrap(),
        "--against",
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn lint_failures_and_usage_errors_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "item_view",
        1,
        &json!({"type": "object", "properties": {"itemId": {}}}),
    );
    let out = check(&["--schemas", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    for rule in [
        "schema_draft",
        "additional_properties_undeclared",
        "property_case",
        "untyped_property",
    ] {
        assert!(said.contains(rule), "{rule}: {said}");
    }
    let out = check(&["--schemas", "/nonexistent/schemas"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = check(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_candidate_is_checked_as_the_version_it_would_become_and_may_go_freely() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = schema(json!({"item_id": {"type": "string"}}), &["item_id"]);
    write(dir.path(), "item_view", 1, &v1);
    let event = dir.path().join("item_view");
    // The candidate requires a new property: breaking, undeclared.
    let candidate = schema(
        json!({"item_id": {"type": "string"}, "rank": {"type": "integer"}}),
        &["item_id", "rank"],
    );
    std::fs::write(event.join("v2.candidate.json"), candidate.to_string()).unwrap();
    let folder = dir.path().to_str().unwrap();
    let out = check(&["--schemas", folder]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("error: item_view v2 property `rank`"),
        "{}",
        text(&out)
    );
    // A live v2 beside the candidate v2 is one version twice.
    write(dir.path(), "item_view", 2, &v1);
    let out = check(&["--schemas", folder]);
    assert!(text(&out).contains("also"), "{}", text(&out));

    // Against a previous state that had the candidate, deleting it is fine: nothing
    // was logged under it.
    let after = tempfile::tempdir().unwrap();
    write(after.path(), "item_view", 1, &v1);
    std::fs::remove_file(event.join("v2.json")).unwrap();
    let out = check(&[
        "--schemas",
        after.path().to_str().unwrap(),
        "--against",
        folder,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
