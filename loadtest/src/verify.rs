//! Reconciliation: what the collector acknowledged against what its log holds.
//!
//! Reads the run's manifest and the collector's `events/` and `quarantine/` segments and
//! reports, for this run's events only (ids start with the run id):
//! - **lost**: answered `accepted` but not in the events log;
//! - **duplicated**: in the events log more than once;
//! - **retries that got through**: duplicated events that were resent by an SDK retry;
//! - **invalid not quarantined**: invalid events the collector answered but that are
//!   neither in the quarantine nor answered `rejected`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::run::ManifestEntry;

/// What the reconciliation found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub acknowledged: u64,
    pub logged: u64,
    pub quarantined: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub retries_through: u64,
    pub invalid_not_quarantined: u64,
    /// Events generated valid that the collector rejected (a schema or configuration
    /// mismatch worth a look; not a loss).
    pub valid_rejected: u64,
    /// Requests sent with an unknown write key that were not answered 401.
    pub unknown_key_not_refused: u64,
    /// Events of such requests found in the log.
    pub unknown_key_logged: u64,
    /// Up to ten example ids per problem.
    pub examples: HashMap<String, Vec<String>>,
}

impl Verification {
    /// True when nothing was lost or double counted and every answered invalid event
    /// was quarantined.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.invalid_not_quarantined == 0
            && self.unknown_key_not_refused == 0
            && self.unknown_key_logged == 0
    }

    fn example(&mut self, kind: &str, id: &str) {
        let list = self.examples.entry(kind.to_owned()).or_default();
        if list.len() < 10 {
            list.push(id.to_owned());
        }
    }
}

/// Where the collector's records are read from.
#[derive(Debug, Clone)]
pub enum LogSource {
    /// A collector's data directory (`events/` and `quarantine/` segments).
    Dir(PathBuf),
    /// Kafka topics, consumed from the beginning.
    Kafka(tollgate_log::TopicSource),
}

impl LogSource {
    /// A short name for reports.
    pub fn describe(&self) -> String {
        match self {
            LogSource::Dir(dir) => dir.display().to_string(),
            LogSource::Kafka(k) => format!("kafka {} topic {}", k.brokers, k.topic),
        }
    }

    fn events(&self, f: impl FnMut(&serde_json::Value)) -> Result<(), VerifyError> {
        match self {
            LogSource::Dir(dir) => for_each_record(&dir.join("events"), f),
            LogSource::Kafka(k) => Ok(k.read(&k.topic, f).map(drop)?),
        }
    }

    fn quarantine(&self, f: impl FnMut(&serde_json::Value)) -> Result<(), VerifyError> {
        match self {
            LogSource::Dir(dir) => for_each_record(&dir.join("quarantine"), f),
            LogSource::Kafka(k) => match &k.quarantine_topic {
                Some(topic) => Ok(k.read(topic, f).map(drop)?),
                None => Ok(()),
            },
        }
    }
}

/// Why a reconciliation could not be made (its findings are in [`Verification`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the manifest {path}: {source}")]
    Manifest {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a manifest entry: {source}")]
    ManifestLine {
        path: std::path::PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading the log {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Topic(#[from] tollgate_log::TopicError),
}

/// Reconciles `manifest` against the collector data dir `log`.
///
/// # Errors
/// Unreadable manifest or log files.
pub fn verify(manifest: &Path, log: &Path) -> Result<Verification, VerifyError> {
    verify_source(manifest, &LogSource::Dir(log.to_owned()))
}

/// Reconciles `manifest` against what `log` holds.
///
/// # Errors
/// Unreadable manifest, log files or topics.
pub fn verify_source(manifest: &Path, log: &LogSource) -> Result<Verification, VerifyError> {
    let mut accepted = HashSet::new();
    let mut rejected = HashSet::new();
    let mut invalid_answered = HashSet::new();
    let mut retried = HashSet::new();
    let mut valid_rejected = HashSet::new();
    let mut refused = HashSet::new();
    let mut not_refused = 0;
    let mut run_prefix: Option<String> = None;
    let unreadable = |source| VerifyError::Manifest {
        path: manifest.to_owned(),
        source,
    };
    let file = std::fs::File::open(manifest).map_err(unreadable)?;
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(unreadable)?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: ManifestEntry =
            serde_json::from_str(&line).map_err(|source| VerifyError::ManifestLine {
                path: manifest.to_owned(),
                line: number + 1,
                source,
            })?;
        if entry.bad_key {
            if entry.status != 401 {
                not_refused += 1;
            }
            refused.extend(entry.events.iter().map(|e| e.id.clone()));
        }
        for event in entry.events {
            if run_prefix.is_none() {
                run_prefix = event.id.rsplitn(3, '-').nth(2).map(|p| format!("{p}-"));
            }
            let acknowledged = (200..300).contains(&entry.status);
            match event.outcome.as_str() {
                "accepted" => {
                    accepted.insert(event.id.clone());
                }
                // Segment answers `{"success":true}` without per-event outcomes: a 2xx
                // means each valid event is durably logged (now, or by an earlier send).
                "none" if acknowledged && event.valid && !entry.bad_key => {
                    accepted.insert(event.id.clone());
                }
                "rejected" => {
                    if event.valid {
                        valid_rejected.insert(event.id.clone());
                    }
                    rejected.insert(event.id.clone());
                }
                _ => {}
            }
            if !event.valid && (200..300).contains(&entry.status) {
                invalid_answered.insert(event.id.clone());
            }
            if entry.retry {
                retried.insert(event.id);
            }
        }
    }
    let prefix = run_prefix.unwrap_or_default();
    let mut counts: HashMap<String, u64> = HashMap::new();
    log.events(|record| {
        if let Some(id) = record.get("event_id").and_then(|v| v.as_str())
            && id.starts_with(&prefix)
        {
            *counts.entry(id.to_owned()).or_default() += 1;
        }
    })?;
    let mut quarantined = HashSet::new();
    log.quarantine(|record| {
        // Rejected events are kept under native names (a Segment `messageId` as
        // `event_id`); logs written before that kept Segment's `messageId`.
        let id = record
            .pointer("/event/event_id")
            .or_else(|| record.pointer("/event/messageId"))
            .and_then(|v| v.as_str());
        if let Some(id) = id
            && id.starts_with(&prefix)
        {
            quarantined.insert(id.to_owned());
        }
    })?;

    let mut v = Verification {
        acknowledged: accepted.len() as u64,
        logged: counts.len() as u64,
        quarantined: quarantined.len() as u64,
        valid_rejected: valid_rejected.len() as u64,
        unknown_key_not_refused: not_refused,
        ..Verification::default()
    };
    let mut leaked: Vec<&String> = refused
        .iter()
        .filter(|id| counts.contains_key(*id))
        .collect();
    leaked.sort();
    for id in leaked {
        v.unknown_key_logged += 1;
        v.example("unknown_key_logged", id);
    }
    let mut sorted: Vec<&String> = accepted.iter().collect();
    sorted.sort();
    for id in sorted {
        if !counts.contains_key(id) {
            v.lost += 1;
            v.example("lost", id);
        }
    }
    let mut doubled: Vec<(&String, &u64)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    doubled.sort();
    for (id, _) in doubled {
        v.duplicated += 1;
        v.example("duplicated", id);
        if retried.contains(id) {
            v.retries_through += 1;
        }
    }
    let mut invalid: Vec<&String> = invalid_answered.iter().collect();
    invalid.sort();
    for id in invalid {
        if !quarantined.contains(id) && !rejected.contains(id) {
            v.invalid_not_quarantined += 1;
            v.example("invalid_not_quarantined", id);
        }
    }
    Ok(v)
}

/// Calls `f` with every record of every segment in `dir` (none when it does not exist),
/// read with the collector's own segment reader.
fn for_each_record(dir: &Path, mut f: impl FnMut(&serde_json::Value)) -> Result<(), VerifyError> {
    tollgate_log::for_each_line(dir, |line| {
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(line) {
            f(&record);
        }
    })
    .map_err(|source| VerifyError::Log {
        path: dir.to_owned(),
        source,
    })
}
