//! The schema registry: versioned JSON Schemas for each event's `properties`.
//!
//! Enters: an event's name, schema version and properties. Leaves: `Ok` or the first
//! violation with a JSON pointer. Schemas are read from `<dir>/<event_name>/v<N>.json`
//! and compiled once at start-up; several versions of one event are live at once so
//! old app versions keep logging while new ones roll out.

pub mod config;

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};
pub mod check;

use tollgate_event::event::is_snake_case;

/// An event name a schema may be registered under: snake_case, or a PostHog event's
/// own `$` name (`$pageview`), which is logged as it is.
fn is_schema_name(name: &str) -> bool {
    is_snake_case(name.strip_prefix('$').unwrap_or(name))
}
use tollgate_event::{ErrorCode, EventError};

/// Compiled validators by event name and version.
#[derive(Default)]
pub struct SchemaRegistry {
    events: HashMap<String, EventSchemas>,
}

/// The entries of `dir`, without hidden ones (`.git`, a ConfigMap's `..data`).
fn list(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// `v<N>.json` with N >= 1.
fn version_of(file_name: &str) -> Option<u32> {
    file_name
        .strip_prefix('v')
        .and_then(|rest| rest.strip_suffix(".json"))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|v| *v >= 1)
}

/// A schema file: (event, version, path).
pub type SchemaFile = (String, u32, std::path::PathBuf);

/// The schema files under `dir` as (event, version, path), and the problems with the
/// names found there: `<event>/v<N>.json`, or flat `<event>.v<N>.json` files (the
/// layout of a mounted Kubernetes ConfigMap, whose hidden `..data` entries are skipped).
///
/// # Errors
/// When `dir` itself cannot be read.
pub fn files(dir: &Path) -> Result<(Vec<SchemaFile>, Vec<String>), Vec<String>> {
    let mut problems = Vec::new();
    let mut found: Vec<SchemaFile> = Vec::new();
    let mut entries = match list(dir) {
        Ok(entries) => entries,
        Err(e) => return Err(vec![format!("{}: {e}", dir.display())]),
    };
    entries.sort();
    for entry in entries {
        let name = file_name(&entry);
        if entry.is_dir() {
            if !is_schema_name(&name) {
                problems.push(format!(
                    "{}: event folder names must be snake_case (or `$` and snake_case, for PostHog's own events)",
                    entry.display()
                ));
                continue;
            }
            let files = match list(&entry) {
                Ok(files) => files,
                Err(e) => {
                    problems.push(format!("{}: {e}", entry.display()));
                    continue;
                }
            };
            for file in files {
                match version_of(&file_name(&file)) {
                    Some(version) => found.push((name.clone(), version, file)),
                    None => problems.push(format!(
                        "{}: schema files must be named v<N>.json with N >= 1",
                        file.display()
                    )),
                }
            }
        } else if let Some((event, version)) = name
            .strip_suffix(".json")
            .and_then(|stem| stem.rsplit_once(".v"))
            .filter(|(event, _)| is_schema_name(event))
            .and_then(|(event, v)| version_of(&format!("v{v}.json")).map(|v| (event, v)))
        {
            found.push((event.to_owned(), version, entry));
        } else {
            problems.push(format!(
                "{}: expected an <event>/ folder or an <event>.v<N>.json file",
                entry.display()
            ));
        }
    }
    Ok((found, problems))
}

struct EventSchemas {
    /// Sorted by version.
    versions: Vec<(u32, jsonschema::Validator)>,
    /// Required properties named `*_id` in the newest version: the object ids whose
    /// null rate the data-quality metrics watch.
    required_ids: Vec<String>,
}

/// Whether a lookup may fall back to the base event model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownEvents {
    Reject,
    Allow,
}

impl SchemaRegistry {
    /// Loads and compiles every schema under `dir`: `<event>/v<N>.json`, or flat
    /// `<event>.v<N>.json` files (the layout of a mounted Kubernetes ConfigMap, whose
    /// hidden `..data` entries are skipped).
    ///
    /// # Errors
    /// Every problem found (bad folder or file names, unreadable files, invalid JSON,
    /// invalid JSON Schema), each naming its file.
    pub fn load(dir: &Path) -> Result<SchemaRegistry, Vec<String>> {
        let (found, mut problems) = files(dir)?;
        let mut required: HashMap<String, (u32, Vec<String>)> = HashMap::new();
        let mut events: HashMap<String, EventSchemas> = HashMap::new();
        for (event, version, file) in found {
            match compile(&file) {
                Ok((validator, ids)) => {
                    let newest = required.entry(event.clone()).or_default();
                    if version >= newest.0 {
                        *newest = (version, ids);
                    }
                    events
                        .entry(event)
                        .or_insert_with(|| EventSchemas {
                            versions: Vec::new(),
                            required_ids: Vec::new(),
                        })
                        .versions
                        .push((version, validator));
                }
                Err(e) => problems.push(format!("{}: {e}", file.display())),
            }
        }
        for (event, (_, ids)) in required {
            if let Some(schemas) = events.get_mut(&event) {
                schemas.required_ids = ids;
            }
        }
        for (event, schemas) in &mut events {
            schemas.versions.sort_by_key(|(v, _)| *v);
            if let Some(w) = schemas.versions.windows(2).find(|w| w[0].0 == w[1].0) {
                problems.push(format!(
                    "{event}: version {} is defined twice (folder and flat file?)",
                    w[0].0
                ));
            }
        }
        if problems.is_empty() {
            Ok(SchemaRegistry { events })
        } else {
            Err(problems)
        }
    }

    /// Whether `event_name` has a registered schema.
    pub fn contains(&self, event_name: &str) -> bool {
        self.events.contains_key(event_name)
    }

    /// The required `*_id` properties of the newest version of `event_name`.
    pub fn required_ids(&self, event_name: &str) -> &[String] {
        self.events
            .get(event_name)
            .map_or(&[], |e| e.required_ids.as_slice())
    }

    /// Number of (event, version) schemas loaded.
    pub fn len(&self) -> usize {
        self.events.values().map(|e| e.versions.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Validates `properties` against `event_name` at `version`.
    ///
    /// # Errors
    /// `unknown_event` (no schema and `unknown` is `Reject`), `unknown_schema_version`,
    /// or `schema_violation` with the pointer of the first offending value.
    pub fn validate(
        &self,
        event_name: &str,
        version: u32,
        properties: &Value,
        unknown: UnknownEvents,
    ) -> Result<(), EventError> {
        let Some(schemas) = self.events.get(event_name) else {
            return match unknown {
                UnknownEvents::Allow => Ok(()),
                UnknownEvents::Reject => Err(EventError::new(
                    ErrorCode::UnknownEvent,
                    "/event_name",
                    format!("no schema is registered for `{event_name}`"),
                )),
            };
        };
        let Some((_, validator)) = schemas.versions.iter().find(|(v, _)| *v == version) else {
            let known: Vec<String> = schemas
                .versions
                .iter()
                .map(|(v, _)| v.to_string())
                .collect();
            return Err(EventError::new(
                ErrorCode::UnknownSchemaVersion,
                "/schema_version",
                format!(
                    "`{event_name}` has schema versions {}, not {version}",
                    known.join(", ")
                ),
            ));
        };
        if validator.is_valid(properties) {
            return Ok(());
        }
        let err = validator
            .validate(properties)
            .expect_err("is_valid said the instance is invalid");
        let path = format!("/properties{}", err.instance_path());
        // Masked: "value is not of type \"integer\"", never the client's value (it may
        // be personal data, and messages reach answers and the quarantine).
        Err(EventError::new(
            ErrorCode::SchemaViolation,
            path,
            err.masked().to_string(),
        ))
    }

    /// For events that carry no version (Segment): the newest registered version that
    /// `properties` satisfies, so that old clients keep validating while new versions
    /// roll out. The version is 1 for an unregistered event the source allows.
    ///
    /// # Errors
    /// `unknown_event`, or the newest version's violation when none is satisfied.
    pub fn validate_newest_matching(
        &self,
        event_name: &str,
        properties: &mut Map<String, Value>,
        unknown: UnknownEvents,
    ) -> Result<u32, EventError> {
        let Some(schemas) = self.events.get(event_name) else {
            return self
                .validate_map(event_name, 1, properties, unknown)
                .map(|()| 1);
        };
        let value = Value::Object(std::mem::take(properties));
        let matched = schemas
            .versions
            .iter()
            .rev()
            .find(|(_, validator)| validator.is_valid(&value))
            .map(|(version, _)| *version);
        let newest = schemas.versions.last().map_or(1, |(v, _)| *v);
        let result = match matched {
            Some(version) => Ok(version),
            None => self
                .validate(event_name, newest, &value, unknown)
                .map(|()| newest),
        };
        if let Value::Object(map) = value {
            *properties = map;
        }
        result
    }

    /// [`validate`](Self::validate) for a properties map, moved into a `Value` and back
    /// so that nothing is copied.
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn validate_map(
        &self,
        event_name: &str,
        version: u32,
        properties: &mut Map<String, Value>,
        unknown: UnknownEvents,
    ) -> Result<(), EventError> {
        let value = Value::Object(std::mem::take(properties));
        let result = self.validate(event_name, version, &value, unknown);
        if let Value::Object(map) = value {
            *properties = map;
        }
        result
    }
}

/// The compiled schema and its required `*_id` properties.
fn compile(file: &Path) -> Result<(jsonschema::Validator, Vec<String>), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if !schema.is_object() {
        return Err("a schema must be a JSON object".into());
    }
    let ids = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|name| name.ends_with("_id"))
        .map(str::to_owned)
        .collect();
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| format!("invalid JSON Schema: {e}"))?;
    Ok((validator, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type": "object", "required": ["item_id"]}"#;

    #[test]
    fn flat_files_load_like_folders_and_hidden_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("item_view.v1.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("item_view.v2.json"), SCHEMA).unwrap();
        std::fs::create_dir(dir.path().join("order_completed")).unwrap();
        std::fs::write(dir.path().join("order_completed/v1.json"), SCHEMA).unwrap();
        // What a mounted ConfigMap adds next to its files.
        std::fs::create_dir(dir.path().join("..2026_11_29_06_30_00.123")).unwrap();
        std::fs::write(dir.path().join("..data"), "").unwrap();
        let registry = SchemaRegistry::load(dir.path()).unwrap();
        assert_eq!(registry.len(), 3);
        assert_eq!(registry.required_ids("item_view"), ["item_id"]);
        assert!(registry.contains("order_completed") && !registry.contains("nope"));
        let properties = serde_json::json!({});
        let error = registry
            .validate("item_view", 2, &properties, UnknownEvents::Reject)
            .unwrap_err();
        assert_eq!(error.code, tollgate_event::ErrorCode::SchemaViolation);
    }

    #[test]
    fn a_version_in_both_layouts_and_stray_files_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("item_view.v1.json"), SCHEMA).unwrap();
        std::fs::create_dir(dir.path().join("item_view")).unwrap();
        std::fs::write(dir.path().join("item_view/v1.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("README.md"), "notes").unwrap();
        let problems = SchemaRegistry::load(dir.path()).err().unwrap();
        assert!(
            problems.iter().any(|p| p.contains("defined twice")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("README.md")),
            "{problems:?}"
        );
    }

    #[test]
    fn posthog_names_may_name_schemas_and_nothing_else_outside_snake_case() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("$pageview")).unwrap();
        std::fs::write(dir.path().join("$pageview/v1.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("$autocapture.v1.json"), SCHEMA).unwrap();
        let registry = SchemaRegistry::load(dir.path()).unwrap();
        assert!(registry.contains("$pageview") && registry.contains("$autocapture"));
        for bad in ["Page View", "$$pageview", "$", "page-view"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join(bad)).unwrap();
            std::fs::write(dir.path().join(bad).join("v1.json"), SCHEMA).unwrap();
            assert!(SchemaRegistry::load(dir.path()).is_err(), "{bad}");
        }
    }
}
