//! `tollgate-collector schema check`: lints every schema and classifies each change
//! between consecutive versions of an event (and, with `--against`, between a version
//! file and its previous state) as compatible or breaking.
//!
//! Compatible: adding an optional property, widening a type or an enum, relaxing a
//! bound, making a required property optional, opening `additionalProperties`.
//! Breaking: removing a property, adding a required one, making an optional property
//! required, narrowing or changing a type, narrowing an enum, tightening a bound or a
//! pattern, closing `additionalProperties` — at every level: nested objects and array
//! items are compared by path (`address.city`, `items[].sku`), local `$ref`s as what
//! they point to. A breaking step between versions must be declared in the new
//! version (`"x-tollgate-breaking": "why"`), so that consumers of the log are warned on
//! purpose; a version edited in place may only change compatibly
//! (records already logged under it must still validate), and a version may not be
//! deleted. A candidate (`v<N>.candidate.json`) is checked as the version it would
//! become; in the previous state it is skipped (nothing was logged under it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};
use tollgate_event::event::is_snake_case;

/// The JSON Schema dialect every schema declares.
pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The keyword that declares a breaking version on purpose.
pub const BREAKING_KEYWORD: &str = "x-tollgate-breaking";

/// One thing `schema check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub event: String,
    /// The version the finding is about (the newer one of a step).
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A stable name: `property_removed`, `untyped_property`, …
    pub rule: &'static str,
    pub message: String,
    /// `violation` fails the check; `declared` is a breaking step the new version
    /// declares; `compatible` is reported for the record.
    pub level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Violation,
    Declared,
    Compatible,
}

/// What `schema check` found in a folder.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Schema files read.
    pub schemas: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Violation)
            .count()
    }

    /// One line per finding, then a summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let level = match f.level {
                Level::Violation => "error",
                Level::Declared => "declared",
                Level::Compatible => "ok",
            };
            let property = f
                .property
                .as_ref()
                .map(|p| format!(" property `{p}`"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{level}: {} v{}{property}: {} ({})\n",
                f.event, f.version, f.message, f.rule
            ));
        }
        out.push_str(&format!(
            "{} schemas, {} violations\n",
            self.schemas,
            self.violations()
        ));
        out
    }
}

/// Schemas by event and version, as JSON.
type Folder = BTreeMap<String, BTreeMap<u32, Value>>;

/// Checks every schema under `dir`, and against the folder's previous state `against`
/// when given.
///
/// # Errors
/// When a folder cannot be read at all (a usage error, exit 2).
pub fn check(dir: &Path, against: Option<&Path>) -> Result<Report, String> {
    let mut report = Report::default();
    let current = read(dir, &mut report, Candidates::AsTheirVersion)?;
    for (event, versions) in &current {
        for (version, schema) in versions {
            lint(event, *version, schema, &mut report.findings);
        }
        let list: Vec<_> = versions.iter().collect();
        for pair in list.windows(2) {
            let ((_, old), (&version, new)) = (pair[0], pair[1]);
            let declared = new
                .get(BREAKING_KEYWORD)
                .and_then(Value::as_str)
                .is_some_and(|why| !why.trim().is_empty());
            for change in compare(old, new) {
                report
                    .findings
                    .push(
                        change.finding(event, version, |breaking| match (breaking, declared) {
                            (false, _) => Level::Compatible,
                            (true, true) => Level::Declared,
                            (true, false) => Level::Violation,
                        }),
                    );
            }
        }
    }
    if let Some(previous) = against {
        let mut ignored = Report::default();
        // A candidate decided nothing: no record was logged under it, so it may change
        // or go freely.
        let previous = read(previous, &mut ignored, Candidates::Skipped)?;
        for (event, versions) in &previous {
            for (version, before) in versions {
                let Some(now) = current.get(event).and_then(|v| v.get(version)) else {
                    report.findings.push(Finding {
                        event: event.clone(),
                        version: *version,
                        property: None,
                        rule: "version_deleted",
                        message: "this version exists in the previous state and was deleted; records logged under it could no longer be validated".into(),
                        level: Level::Violation,
                    });
                    continue;
                };
                for change in compare(before, now) {
                    // Edited in place: only compatible changes, declared or not.
                    let mut finding = change.finding(event, *version, |breaking| {
                        if breaking {
                            Level::Violation
                        } else {
                            Level::Compatible
                        }
                    });
                    if finding.level == Level::Violation {
                        finding.message = format!("edited in place, breaking: {}", finding.message);
                    }
                    report.findings.push(finding);
                }
            }
        }
    }
    Ok(report)
}

/// How [`read`] takes candidate schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidates {
    /// As the version they would become: checked like it, before promotion.
    AsTheirVersion,
    Skipped,
}

/// Reads every schema file of `dir`; unreadable or non-JSON files are violations.
fn read(dir: &Path, report: &mut Report, candidates: Candidates) -> Result<Folder, String> {
    let (files, problems) = super::files(dir).map_err(|p| p.join("; "))?;
    let mut folder = Folder::new();
    for problem in problems {
        report.findings.push(Finding {
            event: String::new(),
            version: 0,
            property: None,
            rule: "file_name",
            message: problem,
            level: Level::Violation,
        });
    }
    for super::SchemaFile {
        event,
        version,
        candidate,
        path,
    } in files
    {
        if candidate && candidates == Candidates::Skipped {
            continue;
        }
        report.schemas += 1;
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(schema) => {
                folder.entry(event).or_default().insert(version, schema);
            }
            Err(e) => report.findings.push(Finding {
                event,
                version,
                property: None,
                rule: "invalid_json",
                message: format!("{}: {e}", path.display()),
                level: Level::Violation,
            }),
        }
    }
    Ok(folder)
}

/// The lint rules of one schema.
fn lint(event: &str, version: u32, schema: &Value, findings: &mut Vec<Finding>) {
    let mut add = |property: Option<&str>, rule: &'static str, message: String| {
        findings.push(Finding {
            event: event.to_owned(),
            version,
            property: property.map(str::to_owned),
            rule,
            message,
            level: Level::Violation,
        });
    };
    if let Err(e) = jsonschema::validator_for(schema) {
        add(
            None,
            "invalid_schema",
            format!("not a valid JSON Schema: {e}"),
        );
        return;
    }
    if schema.get("$schema").and_then(Value::as_str) != Some(DRAFT) {
        add(
            None,
            "schema_draft",
            format!("declare \"$schema\": \"{DRAFT}\""),
        );
    }
    if schema.get("additionalProperties").is_none() {
        add(
            None,
            "additional_properties_undeclared",
            "declare `additionalProperties` (false to refuse unknown properties, true to allow them)".into(),
        );
    }
    let mut lowered: BTreeMap<String, &str> = BTreeMap::new();
    for (name, property) in properties(schema) {
        if !is_snake_case(name) {
            add(
                Some(name),
                "property_case",
                "property names are snake_case".into(),
            );
        }
        if let Some(other) = lowered.insert(name.to_lowercase(), name) {
            add(
                Some(name),
                "name_collision",
                format!("collides with `{other}` when case is ignored"),
            );
        }
        let typed = ["type", "enum", "const", "$ref"]
            .iter()
            .any(|k| property.get(*k).is_some());
        if !typed {
            add(
                Some(name),
                "untyped_property",
                "give the property a `type` (or `enum`/`const`)".into(),
            );
        }
    }
}

fn properties(schema: &Value) -> impl Iterator<Item = (&String, &Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn required(schema: &Value) -> BTreeSet<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One difference between two versions of a schema.
struct Change {
    property: Option<String>,
    rule: &'static str,
    breaking: bool,
    message: String,
}

impl Change {
    fn finding(self, event: &str, version: u32, level: impl FnOnce(bool) -> Level) -> Finding {
        Finding {
            event: event.to_owned(),
            version,
            property: self.property,
            rule: self.rule,
            message: self.message,
            level: level(self.breaking),
        }
    }
}

/// Every change from `old` to `new`, each classified.
fn compare(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut change =
        |property: Option<&str>, rule: &'static str, breaking: bool, message: String| {
            changes.push(Change {
                property: property.map(str::to_owned),
                rule,
                breaking,
                message,
            });
        };
    let roots = Roots { old, new };
    compare_object(&roots, None, old, new, 0, &mut change);
    changes
}

/// The two documents being compared, against which local `$ref`s resolve.
struct Roots<'a> {
    old: &'a Value,
    new: &'a Value,
}

/// How deep nested objects and array items are compared (a `$ref` cycle stops here).
const MAX_DEPTH: usize = 16;

/// Where change callbacks go: (property path, rule, breaking, message).
type OnChange<'c> = dyn FnMut(Option<&str>, &'static str, bool, String) + 'c;

/// `schema`, or what its local `$ref` (`#/$defs/price`) points to in `root`.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..MAX_DEPTH {
        let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        else {
            break;
        };
        schema = target;
    }
    schema
}

/// Compares two object schemas: `additionalProperties`, then each property, by path
/// (`at`: `None` for the event's properties, `address.city`, `items[].sku` below).
fn compare_object(
    roots: &Roots<'_>,
    at: Option<&str>,
    old: &Value,
    new: &Value,
    depth: usize,
    change: &mut OnChange<'_>,
) {
    let path = |name: &str| match at {
        Some(at) => format!("{at}.{name}"),
        None => name.to_owned(),
    };
    let closed = |s: &Value| s.get("additionalProperties") == Some(&Value::Bool(false));
    match (closed(old), closed(new)) {
        (false, true) => change(
            at,
            "closed",
            true,
            "`additionalProperties` became false: events with other properties are refused".into(),
        ),
        (true, false) => change(
            at,
            "opened",
            false,
            "`additionalProperties` no longer false".into(),
        ),
        _ => {}
    }
    let (old_required, new_required) = (required(old), required(new));
    let old_properties: Map<String, Value> = properties(old)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let new_properties: Map<String, Value> = properties(new)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, before) in &old_properties {
        let name_at = path(name);
        let Some(after) = new_properties.get(name) else {
            change(
                Some(&name_at),
                "property_removed",
                true,
                "removed (or renamed)".into(),
            );
            continue;
        };
        match (
            old_required.contains(name.as_str()),
            new_required.contains(name.as_str()),
        ) {
            (false, true) => change(
                Some(&name_at),
                "made_required",
                true,
                "optional before, required now".into(),
            ),
            (true, false) => change(
                Some(&name_at),
                "made_optional",
                false,
                "required before, optional now".into(),
            ),
            _ => {}
        }
        compare_property(roots, &name_at, before, after, depth, change);
    }
    for name in new_properties
        .keys()
        .filter(|n| !old_properties.contains_key(*n))
    {
        if new_required.contains(name.as_str()) {
            change(
                Some(&path(name)),
                "required_added",
                true,
                "added as required: events of older clients lack it".into(),
            );
        } else {
            change(
                Some(&path(name)),
                "optional_added",
                false,
                "added as optional".into(),
            );
        }
    }
}

fn compare_property(
    roots: &Roots<'_>,
    name: &str,
    old: &Value,
    new: &Value,
    depth: usize,
    change: &mut OnChange<'_>,
) {
    let (old, new) = (resolve(roots.old, old), resolve(roots.new, new));
    let types = |s: &Value| -> Option<BTreeSet<String>> {
        match s.get("type")? {
            Value::String(t) => Some(BTreeSet::from([t.clone()])),
            Value::Array(list) => Some(
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => None,
        }
    };
    // What a set of types accepts: "number" covers "integer".
    let covers = |wide: &BTreeSet<String>, t: &str| {
        wide.contains(t) || (t == "integer" && wide.contains("number"))
    };
    match (types(old), types(new)) {
        (Some(before), Some(after)) if before != after => {
            if before.iter().all(|t| covers(&after, t)) {
                change(
                    Some(name),
                    "type_widened",
                    false,
                    format!("type {before:?} → {after:?}"),
                );
            } else {
                change(
                    Some(name),
                    "type_changed",
                    true,
                    format!("type {before:?} → {after:?}: values valid before are refused"),
                );
            }
        }
        (None, Some(after)) => change(
            Some(name),
            "type_changed",
            true,
            format!("type added: {after:?}"),
        ),
        (Some(before), None) => change(
            Some(name),
            "type_widened",
            false,
            format!("type {before:?} removed"),
        ),
        _ => {}
    }
    let values = |s: &Value| s.get("enum").and_then(Value::as_array).cloned();
    match (values(old), values(new)) {
        (Some(before), Some(after)) if before != after => {
            if before.iter().all(|v| after.contains(v)) {
                change(
                    Some(name),
                    "enum_widened",
                    false,
                    "enum values added".into(),
                );
            } else {
                change(
                    Some(name),
                    "enum_narrowed",
                    true,
                    "enum values removed".into(),
                );
            }
        }
        (None, Some(_)) => change(Some(name), "enum_narrowed", true, "enum added".into()),
        (Some(_), None) => change(Some(name), "enum_widened", false, "enum removed".into()),
        _ => {}
    }
    // Lower bounds tighten upwards, upper bounds downwards.
    for (keyword, lower) in [
        ("minimum", true),
        ("exclusiveMinimum", true),
        ("minLength", true),
        ("minItems", true),
        ("maximum", false),
        ("exclusiveMaximum", false),
        ("maxLength", false),
        ("maxItems", false),
    ] {
        let bound = |s: &Value| s.get(keyword).and_then(Value::as_f64);
        let tightened = match (bound(old), bound(new)) {
            (None, Some(_)) => Some(true),
            (Some(_), None) => Some(false),
            (Some(a), Some(b)) if a != b => Some(if lower { b > a } else { b < a }),
            _ => None,
        };
        match tightened {
            Some(true) => change(
                Some(name),
                "range_narrowed",
                true,
                format!("`{keyword}` tightened"),
            ),
            Some(false) => change(
                Some(name),
                "range_widened",
                false,
                format!("`{keyword}` relaxed"),
            ),
            None => {}
        }
    }
    match (old.get("pattern"), new.get("pattern")) {
        (before, Some(after)) if before != Some(after) => {
            change(
                Some(name),
                "pattern_changed",
                true,
                "`pattern` added or changed".into(),
            );
        }
        (Some(_), None) => change(
            Some(name),
            "pattern_removed",
            false,
            "`pattern` removed".into(),
        ),
        _ => {}
    } // Nested: an object's own properties, an array's items, to any depth.
    if depth >= MAX_DEPTH {
        return;
    }
    if old.get("properties").is_some() || new.get("properties").is_some() {
        compare_object(roots, Some(name), old, new, depth + 1, change);
    }
    if let (Some(before), Some(after)) = (old.get("items"), new.get("items"))
        && before.is_object()
        && after.is_object()
    {
        compare_property(
            roots,
            &format!("{name}[]"),
            before,
            after,
            depth + 1,
            change,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(properties: Value, required: &[&str]) -> Value {
        json!({"$schema": DRAFT, "type": "object", "properties": properties,
               "required": required, "additionalProperties": false})
    }

    fn rules(old: &Value, new: &Value) -> Vec<(&'static str, bool)> {
        compare(old, new)
            .into_iter()
            .map(|c| (c.rule, c.breaking))
            .collect()
    }

    #[test]
    fn each_change_is_classified() {
        let base = schema(
            json!({"id": {"type": "string"}, "n": {"type": "integer", "minimum": 0, "maximum": 10},
                   "kind": {"type": "string", "enum": ["a", "b"]}}),
            &["id"],
        );
        let with = |f: &dyn Fn(&mut Value)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        assert_eq!(rules(&base, &base), []);
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["x"] = json!({"type": "string"}))
            ),
            [("optional_added", false)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| {
                    s["properties"]["x"] = json!({"type": "string"});
                    s["required"] = json!(["id", "x"]);
                })
            ),
            [("required_added", true)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]
                    .as_object_mut()
                    .unwrap()
                    .retain(|k, _| k != "kind"))
            ),
            [("property_removed", true)]
        );
        assert_eq!(
            rules(&base, &with(&|s| s["required"] = json!(["id", "n"]))),
            [("made_required", true)]
        );
        assert_eq!(
            rules(&base, &with(&|s| s["required"] = json!([]))),
            [("made_optional", false)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["n"]["type"] = json!("number"))
            ),
            [("type_widened", false)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["id"]["type"] = json!("integer"))
            ),
            [("type_changed", true)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["kind"]["enum"] = json!(["a", "b", "c"]))
            ),
            [("enum_widened", false)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["kind"]["enum"] = json!(["a"]))
            ),
            [("enum_narrowed", true)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["n"]["maximum"] = json!(100))
            ),
            [("range_widened", false)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["n"]["minimum"] = json!(1))
            ),
            [("range_narrowed", true)]
        );
        assert_eq!(
            rules(
                &base,
                &with(&|s| s["properties"]["id"]["pattern"] = json!("^u-"))
            ),
            [("pattern_changed", true)]
        );
        assert_eq!(
            rules(&base, &with(&|s| s["additionalProperties"] = json!(true))),
            [("opened", false)]
        );
    }

    #[test]
    fn lint_names_each_problem() {
        let mut findings = Vec::new();
        let bad = json!({"type": "object", "properties": {"itemId": {"type": "string"}, "itemid": {"type": "string"}, "blob": {}}});
        lint("x", 1, &bad, &mut findings);
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        assert_eq!(
            rules,
            [
                "schema_draft",
                "additional_properties_undeclared",
                "untyped_property",
                "property_case",
                "name_collision"
            ]
        );
        let mut none = Vec::new();
        lint(
            "x",
            1,
            &schema(json!({"item_id": {"type": "string"}}), &[]),
            &mut none,
        );
        assert!(none.is_empty(), "{none:?}");
        lint("x", 1, &json!({"type": 12}), &mut none);
        assert_eq!(none[0].rule, "invalid_schema");
    }

    /// (property path, rule, breaking) of each change.
    fn paths(old: &Value, new: &Value) -> Vec<(String, &'static str, bool)> {
        compare(old, new)
            .into_iter()
            .map(|c| (c.property.unwrap_or_default(), c.rule, c.breaking))
            .collect()
    }

    #[test]
    fn nested_objects_array_items_and_local_refs_are_compared_by_path() {
        let base = json!({
            "type": "object",
            "$defs": {"money": {"type": "number", "minimum": 0}},
            "properties": {
                "address": {"type": "object", "properties": {"city": {"type": "string"}}},
                "items": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "price": {"$ref": "#/$defs/money"}},
                    "required": ["sku"]
                }}
            }
        });
        let with = |f: &dyn Fn(&mut Value)| {
            let mut s = base.clone();
            f(&mut s);
            s
        };
        assert_eq!(paths(&base, &base), []);
        assert_eq!(
            paths(
                &base,
                &with(&|s| s["properties"]["items"]["items"]["required"] = json!(["sku", "price"]))
            ),
            [("items[].price".into(), "made_required", true)]
        );
        assert_eq!(
            paths(
                &base,
                &with(
                    &|s| s["properties"]["address"]["properties"]["city"]["type"] =
                        json!("integer")
                )
            ),
            [("address.city".into(), "type_changed", true)]
        );
        assert_eq!(
            paths(
                &base,
                &with(&|s| s["properties"]["address"]["properties"]["zip"] =
                    json!({"type": "string"}))
            ),
            [("address.zip".into(), "optional_added", false)]
        );
        // The definition a $ref points to changes: every property using it changes.
        assert_eq!(
            paths(&base, &with(&|s| s["$defs"]["money"]["minimum"] = json!(1))),
            [("items[].price".into(), "range_narrowed", true)]
        );
        assert_eq!(
            paths(
                &base,
                &with(&|s| s["properties"]["address"]["additionalProperties"] = json!(false))
            ),
            [("address".into(), "closed", true)]
        );
        // A $ref cycle ends.
        let cyclic = json!({"type": "object", "$defs": {"node": {"type": "object",
            "properties": {"child": {"$ref": "#/$defs/node"}}}},
            "properties": {"tree": {"$ref": "#/$defs/node"}}});
        assert_eq!(paths(&cyclic, &cyclic), []);
    }
}
