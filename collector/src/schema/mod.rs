//! The schema registry: versioned JSON Schemas for each event's `properties`.
//!
//! Enters: an event's name, schema version and properties. Leaves: `Ok` or the first
//! violation with a JSON pointer. Schemas are read from `<dir>/<event_name>/v<N>.json`
//! and compiled once at start-up; several versions of one event are live at once so
//! old app versions keep logging while new ones roll out. A `v<N>.candidate.json` is
//! the next version on trial: validated beside the live ones, deciding nothing
//! ([`candidate`]).

pub mod candidate;
pub mod check;
pub mod config;
pub mod promote;

use std::path::Path;

use foldhash::{HashMap, HashMapExt};
use serde_json::{Map, Value};
use tollgate_event::event::is_snake_case;
use tollgate_event::{ErrorCode, EventError};

use candidate::Candidate;

/// An event name a schema may be registered under: snake_case, or a PostHog event's
/// own `$` name (`$pageview`), which is logged as it is.
fn is_schema_name(name: &str) -> bool {
    is_snake_case(name.strip_prefix('$').unwrap_or(name))
}

/// Compiled validators by event name and version.
pub struct SchemaRegistry {
    events: HashMap<String, EventSchemas>,
    /// At most one candidate per event, newer than its live versions.
    candidates: HashMap<String, Candidate>,
    /// What identifies this set of schemas; see [`SchemaRegistry::id`].
    id: String,
}

impl Default for SchemaRegistry {
    /// No schemas at all.
    fn default() -> Self {
        SchemaRegistry {
            events: HashMap::new(),
            candidates: HashMap::new(),
            id: set_id(Vec::new()),
        }
    }
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

/// `v<N>.json` (live) or `v<N>.candidate.json` (a candidate), N >= 1: the version and
/// whether it is a candidate.
fn version_of(file_name: &str) -> Option<(u32, bool)> {
    let stem = file_name.strip_prefix('v')?.strip_suffix(".json")?;
    let (number, candidate) = match stem.strip_suffix(".candidate") {
        Some(number) => (number, true),
        None => (stem, false),
    };
    let version = number.parse::<u32>().ok().filter(|v| *v >= 1)?;
    Some((version, candidate))
}

/// A schema file found in the schema folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaFile {
    pub event: String,
    pub version: u32,
    /// `v<N>.candidate.json`: validated beside the live versions without deciding
    /// anything, until promoted.
    pub candidate: bool,
    pub path: std::path::PathBuf,
}

/// The schema files under `dir`, and the problems with the names found there:
/// `<event>/v<N>.json`, or flat `<event>.v<N>.json` files (the layout of a mounted
/// Kubernetes ConfigMap, whose hidden `..data` entries are skipped); candidates are
/// `v<N>.candidate.json` (`<event>.v<N>.candidate.json`).
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
            let mut files = match list(&entry) {
                Ok(files) => files,
                Err(e) => {
                    problems.push(format!("{}: {e}", entry.display()));
                    continue;
                }
            };
            files.sort();
            for path in files {
                match version_of(&file_name(&path)) {
                    Some((version, candidate)) => found.push(SchemaFile {
                        event: name.clone(),
                        version,
                        candidate,
                        path,
                    }),
                    None => problems.push(format!(
                        "{}: schema files must be named v<N>.json (or v<N>.candidate.json) with N >= 1",
                        path.display()
                    )),
                }
            }
        } else if let Some((event, (version, candidate))) = name
            .strip_suffix(".json")
            .and_then(|stem| {
                let stem = stem.strip_suffix(".candidate").unwrap_or(stem);
                stem.rsplit_once(".v")
            })
            .filter(|(event, _)| is_schema_name(event))
            .and_then(|(event, _)| version_of(&name[event.len() + 1..]).map(|found| (event, found)))
        {
            found.push(SchemaFile {
                event: event.to_owned(),
                version,
                candidate,
                path: entry,
            });
        } else {
            problems.push(format!(
                "{}: expected an <event>/ folder or an <event>.v<N>.json file",
                entry.display()
            ));
        }
    }
    let mut seen = std::collections::HashMap::new();
    for file in &found {
        if let Some(other) = seen.insert((file.event.as_str(), file.version), &file.path) {
            problems.push(format!(
                "{}: version {} of `{}` is also {} (a version is live or a candidate, in one file)",
                file.path.display(),
                file.version,
                file.event,
                other.display()
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
        let mut texts = Vec::new();
        let mut candidates: HashMap<String, Candidate> = HashMap::new();
        for SchemaFile {
            event,
            version,
            candidate,
            path: file,
        } in found
        {
            match compile(&file) {
                Ok((schema, validator, _)) if candidate => {
                    let new = Candidate::new(event.clone(), version, file, &schema, validator);
                    if let Some(other) = candidates.insert(event.clone(), new) {
                        problems.push(format!(
                            "{}: `{event}` has another candidate, {} (one at a time)",
                            other.path.display(),
                            candidates[&event].path.display()
                        ));
                    }
                }
                Ok((schema, validator, ids)) => {
                    texts.push((event.clone(), version, schema.to_string()));
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
        for schemas in events.values_mut() {
            schemas.versions.sort_by_key(|(v, _)| *v);
        }
        for (event, candidate) in &candidates {
            let newest = events
                .get(event)
                .and_then(|e| e.versions.last())
                .map_or(0, |(v, _)| *v);
            if candidate.version <= newest {
                problems.push(format!(
                    "{}: a candidate must be newer than the live versions (`{event}` has v{newest})",
                    candidate.path.display()
                ));
            }
        }
        if problems.is_empty() {
            Ok(SchemaRegistry {
                events,
                candidates,
                id: set_id(texts),
            })
        } else {
            Err(problems)
        }
    }

    /// What identifies this set: 12 hex digits of a digest of every (event, version,
    /// schema), so that the same schemas have the same id on every replica and after
    /// every restart, whatever the folder layout or the whitespace. Each record names
    /// the set that validated it (`schema_set`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The candidate schema of `event_name`, if it has one.
    pub fn candidate(&self, event_name: &str) -> Option<&Candidate> {
        self.candidates.get(event_name)
    }

    /// The candidates loaded.
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.values()
    }

    /// Every candidate's counts, by event name.
    pub fn candidate_reports(&self) -> Vec<candidate::CandidateReport> {
        let mut reports: Vec<_> = self.candidates.values().map(Candidate::report).collect();
        reports.sort_by(|a, b| a.event.cmp(&b.event));
        reports
    }

    /// Takes over the counts of `previous`'s candidates that are unchanged (a reload
    /// that did not touch a candidate keeps what it saw).
    pub fn keep_candidate_counts_of(&mut self, previous: &SchemaRegistry) {
        for (event, candidate) in &mut self.candidates {
            if let Some(old) = previous.candidates.get(event) {
                candidate.keep_counts_of(old);
            }
        }
    }

    /// Whether `event_name` has a registered schema.
    pub fn contains(&self, event_name: &str) -> bool {
        self.events.contains_key(event_name)
    }

    /// The registry's own copy of `event_name`, when it has a schema (a metric label
    /// that outlives the event).
    pub fn name(&self, event_name: &str) -> Option<&str> {
        self.events
            .get_key_value(event_name)
            .map(|(name, _)| name.as_str())
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
        as_value(properties, |value| {
            let matched = schemas
                .versions
                .iter()
                .rev()
                .find(|(_, validator)| validator.is_valid(value))
                .map(|(version, _)| *version);
            let newest = schemas.versions.last().map_or(1, |(v, _)| *v);
            match matched {
                Some(version) => Ok(version),
                None => self
                    .validate(event_name, newest, value, unknown)
                    .map(|()| newest),
            }
        })
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
        as_value(properties, |value| {
            self.validate(event_name, version, value, unknown)
        })
    }
}

/// Calls `f` with a properties map as the `Value` validators take, moved in and back
/// out, so that nothing is copied.
pub fn as_value<R>(properties: &mut Map<String, Value>, f: impl FnOnce(&Value) -> R) -> R {
    let value = Value::Object(std::mem::take(properties));
    let result = f(&value);
    if let Value::Object(map) = value {
        *properties = map;
    }
    result
}

/// The id of a set of schemas given as (event, version, compact JSON).
fn set_id(mut schemas: Vec<(String, u32, String)>) -> String {
    use sha2::Digest;
    schemas.sort();
    let mut digest = sha2::Sha256::new();
    for (event, version, schema) in &schemas {
        digest.update(format!("{event}\n{version}\n{}\n", schema.len()));
        digest.update(schema);
    }
    crate::privacy::hex(&digest.finalize()[..6])
}

/// The schema, compiled, and its required `*_id` properties.
fn compile(file: &Path) -> Result<(Value, jsonschema::Validator, Vec<String>), String> {
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
    Ok((schema, validator, ids))
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
            problems
                .iter()
                .any(|p| p.contains("version 1 of `item_view` is also")),
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

    #[test]
    fn candidates_load_in_both_layouts_apart_from_the_live_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("item_view")).unwrap();
        std::fs::write(dir.path().join("item_view/v1.json"), SCHEMA).unwrap();
        let live = SchemaRegistry::load(dir.path()).unwrap();
        std::fs::write(dir.path().join("item_view/v2.candidate.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("order_completed.v1.candidate.json"), SCHEMA).unwrap();
        let registry = SchemaRegistry::load(dir.path()).unwrap();
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.candidate("item_view").map(|c| c.version), Some(2));
        // A candidate of an event with no live version yet.
        assert!(registry.candidate("order_completed").is_some());
        assert!(!registry.contains("order_completed"));
        // Candidates decide nothing, so they are not part of the set's id.
        assert_eq!(registry.id(), live.id());
        let error = registry
            .validate(
                "item_view",
                2,
                &serde_json::json!({}),
                UnknownEvents::Reject,
            )
            .unwrap_err();
        assert_eq!(error.code, tollgate_event::ErrorCode::UnknownSchemaVersion);
    }

    #[test]
    fn a_candidate_must_be_newer_than_the_live_versions_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("item_view")).unwrap();
        std::fs::write(dir.path().join("item_view/v2.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("item_view/v1.candidate.json"), SCHEMA).unwrap();
        let problems = SchemaRegistry::load(dir.path()).err().unwrap();
        assert!(
            problems.iter().any(|p| p.contains("newer than")),
            "{problems:?}"
        );
        std::fs::remove_file(dir.path().join("item_view/v1.candidate.json")).unwrap();
        std::fs::write(dir.path().join("item_view/v3.candidate.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("item_view/v4.candidate.json"), SCHEMA).unwrap();
        let problems = SchemaRegistry::load(dir.path()).err().unwrap();
        assert!(
            problems.iter().any(|p| p.contains("another candidate")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_set_id_follows_the_schemas_not_the_layout_or_the_whitespace() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir(folder.path().join("item_view")).unwrap();
        std::fs::write(folder.path().join("item_view/v1.json"), SCHEMA).unwrap();
        let flat = tempfile::tempdir().unwrap();
        let spaced = SCHEMA.replace(", ", ",\n    ");
        std::fs::write(flat.path().join("item_view.v1.json"), spaced).unwrap();
        let a = SchemaRegistry::load(folder.path()).unwrap();
        let b = SchemaRegistry::load(flat.path()).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().len(), 12);
        std::fs::write(
            flat.path().join("item_view.v1.json"),
            r#"{"type": "object"}"#,
        )
        .unwrap();
        assert_ne!(SchemaRegistry::load(flat.path()).unwrap().id(), a.id());
    }
}
