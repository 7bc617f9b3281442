//! The schema registry: versioned JSON Schemas for each event's `properties`.
//!
//! Enters: an event's name, schema version and properties. Leaves: `Ok` or the first
//! violation with a JSON pointer. Schemas are read from `<dir>/<event_name>/v<N>.json`
//! and compiled once at start-up; several versions of one event are live at once so
//! old app versions keep logging while new ones roll out.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};
use tollgate_event::event::is_snake_case;
use tollgate_event::{ErrorCode, EventError};

/// Compiled validators by event name and version.
#[derive(Default)]
pub struct SchemaRegistry {
    events: HashMap<String, EventSchemas>,
}

struct EventSchemas {
    /// Sorted by version.
    versions: Vec<(u32, jsonschema::Validator)>,
}

/// Whether a lookup may fall back to the base event model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownEvents {
    Reject,
    Allow,
}

impl SchemaRegistry {
    /// Loads and compiles every schema under `dir`.
    ///
    /// # Errors
    /// Every problem found (bad folder or file names, unreadable files, invalid JSON,
    /// invalid JSON Schema), each naming its file.
    pub fn load(dir: &Path) -> Result<SchemaRegistry, Vec<String>> {
        let mut problems = Vec::new();
        let mut events = HashMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return Err(vec![format!("{}: {e}", dir.display())]),
        };
        let mut dirs: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        dirs.sort();
        for event_dir in dirs {
            if !event_dir.is_dir() {
                continue;
            }
            let name = event_dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !is_snake_case(&name) {
                problems.push(format!(
                    "{}: event folder names must be snake_case",
                    event_dir.display()
                ));
                continue;
            }
            let mut versions = Vec::new();
            let files = match std::fs::read_dir(&event_dir) {
                Ok(files) => files,
                Err(e) => {
                    problems.push(format!("{}: {e}", event_dir.display()));
                    continue;
                }
            };
            for file in files.filter_map(Result::ok).map(|f| f.path()) {
                let file_name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let version = file_name
                    .strip_prefix('v')
                    .and_then(|rest| rest.strip_suffix(".json"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|v| *v >= 1);
                let Some(version) = version else {
                    problems.push(format!(
                        "{}: schema files must be named v<N>.json with N >= 1",
                        file.display()
                    ));
                    continue;
                };
                match compile(&file) {
                    Ok(validator) => versions.push((version, validator)),
                    Err(e) => problems.push(format!("{}: {e}", file.display())),
                }
            }
            versions.sort_by_key(|(v, _)| *v);
            if !versions.is_empty() {
                events.insert(name, EventSchemas { versions });
            }
        }
        if problems.is_empty() {
            Ok(SchemaRegistry { events })
        } else {
            Err(problems)
        }
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
        Err(EventError::new(
            ErrorCode::SchemaViolation,
            path,
            err.to_string(),
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

fn compile(file: &Path) -> Result<jsonschema::Validator, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if !schema.is_object() {
        return Err("a schema must be a JSON object".into());
    }
    jsonschema::validator_for(&schema).map_err(|e| format!("invalid JSON Schema: {e}"))
}
