//! `[[sources]]`: who may send events, with which write keys and limits.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DEV_WRITE_KEY, Problems};

/// A source: one app or service that sends events with its own write key(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Stamped on every record as `source` (the write key never is).
    pub id: String,
    /// Keys the SDKs send as the HTTP Basic user. Several allow rotation.
    #[serde(default)]
    pub write_keys: Vec<String>,
    /// A file of further keys, one per line (e.g. a mounted Kubernetes Secret), so
    /// that keys stay out of the configuration file.
    #[serde(default)]
    pub write_keys_file: Option<PathBuf>,
    /// Snowplow app ids (`aid`) whose events belong to this source: Snowplow trackers
    /// send no write key, so the app id is all that tells sources apart. Anyone can
    /// put any `aid` in an event; bind only apps whose traffic you would accept from
    /// anyone, and rate-limit the source. `"*"` takes every app id no other source
    /// names (the embedded `dev` source does this).
    #[serde(default)]
    pub app_ids: Vec<String>,
    /// Accept event names without a registered schema (checked against the base event
    /// model only). For development sources.
    #[serde(default)]
    pub allow_unknown_events: bool,
    /// Rate limits; over them requests get 429 with Retry-After.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// A source's rate limits (GCRA). Each is off unless its rate is set; a burst defaults
/// to one second of its rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second of the whole source (all its write keys, all clients).
    pub requests_per_second: Option<NonZeroU32>,
    pub request_burst: Option<NonZeroU32>,
    /// Events per second of the whole source; a batch counts all its events.
    pub events_per_second: Option<NonZeroU32>,
    /// At least `limits.max_events_per_batch`, so that any accepted batch can pass.
    pub event_burst: Option<NonZeroU32>,
    /// Requests per second of each client IP sending with this source's keys.
    pub ip_requests_per_second: Option<NonZeroU32>,
    pub ip_request_burst: Option<NonZeroU32>,
}

/// Checks the sources on their own and against the batch limit.
pub(super) fn check(
    sources: &[SourceConfig],
    max_events_per_batch: usize,
    problems: &mut Problems,
) {
    if sources.is_empty() {
        problems.add("sources", "declare at least one [[sources]] entry");
    }
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut apps = HashSet::new();
    for (i, source) in sources.iter().enumerate() {
        if !tollgate_event::event::is_snake_case(&source.id) {
            problems.add(
                &format!("sources[{i}].id"),
                format!("{:?} must be snake_case", source.id),
            );
        }
        if !ids.insert(&source.id) {
            problems.add(
                &format!("sources[{i}].id"),
                format!("{:?} is declared twice", source.id),
            );
        }
        if source.write_keys.is_empty() && source.app_ids.is_empty() {
            problems.add(
                &format!("sources[{i}].write_keys"),
                "give at least one key (or, for Snowplow trackers, app_ids)",
            );
        }
        for app in &source.app_ids {
            if app.is_empty() {
                problems.add(
                    &format!("sources[{i}].app_ids"),
                    "app ids must be non-empty",
                );
            } else if !apps.insert(app) {
                problems.add(
                    &format!("sources[{i}].app_ids"),
                    format!("{app:?} is bound to two sources"),
                );
            }
        }
        for key in &source.write_keys {
            if key.is_empty() || key.contains(':') {
                problems.add(
                    &format!("sources[{i}].write_keys"),
                    "keys must be non-empty and contain no ':' (they travel as the HTTP Basic user)",
                );
            } else if !keys.insert(key) {
                problems.add(
                    &format!("sources[{i}].write_keys"),
                    "a write key is used by two sources",
                );
            }
        }
        let r = &source.rate_limit;
        if let Some(burst) = r.event_burst.or(r.events_per_second)
            && (burst.get() as usize) < max_events_per_batch
        {
            problems.add(
                &format!("sources[{i}].rate_limit.event_burst"),
                format!(
                    "{burst} is below limits.max_events_per_batch ({max_events_per_batch}): a full batch could never pass"
                ),
            );
        }
    }
}

/// Whether a source has the embedded development key.
pub(super) fn has_dev_key(sources: &[SourceConfig]) -> bool {
    sources
        .iter()
        .any(|s| s.write_keys.iter().any(|k| k == DEV_WRITE_KEY))
}

/// Adds the keys of every `write_keys_file` (one per line; blank lines and `#`
/// comments skipped) to the source's `write_keys`.
pub(super) fn read_write_key_files(sources: &mut [SourceConfig]) -> Result<(), ConfigError> {
    for (i, source) in sources.iter_mut().enumerate() {
        let Some(path) = &source.write_keys_file else {
            continue;
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            key: format!("sources[{i}].write_keys_file"),
            path: path.clone(),
            source: e,
        })?;
        source.write_keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    Ok(())
}
