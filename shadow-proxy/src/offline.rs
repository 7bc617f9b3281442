//! Offline comparison of what two collectors actually logged (old and new logging over
//! the same traffic): counts and bridge ratios per event and per event × segment
//! (platform, app_version, region, source), splits and merges against their expected
//! ratio, events present on one side only, field null-rate changes, new or vanished
//! fields, and drift of categorical fields (population stability index).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compare::{outside_band, ratio_interval};
pub use crate::mapping::Mapping;

/// Segment dimensions of a logged record, counted per event name.
const SEGMENTS: [&str; 4] = ["platform", "app_version", "region", "source"];

/// Categorical fields whose distribution is compared.
const CATEGORICAL: [&str; 3] = ["platform", "app_version", "surface"];
/// Optional fields whose null rate is compared.
const NULLABLE: [&str; 4] = ["user_id", "device_id", "session_id", "app_version"];
/// PSI above this is reported as drift (0.1–0.25 is the usual "moderate" band).
const PSI_DRIFT: f64 = 0.1;
/// A null-rate change larger than this (absolute) is reported.
const NULL_RATE_CHANGE: f64 = 0.05;

#[derive(Debug, Default)]
struct Side {
    ids: HashSet<String>,
    /// Event name → count.
    counts: BTreeMap<String, u64>,
    /// `event_name dimension=value` → count.
    segment_counts: BTreeMap<String, u64>,
    /// Event name → field → nulls.
    nulls: BTreeMap<String, BTreeMap<String, u64>>,
    /// Event name → property keys seen.
    keys: BTreeMap<String, BTreeSet<String>>,
    /// Field → value → count.
    categories: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One event name's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDiff {
    pub old: u64,
    pub new: u64,
    pub ratio: Option<f64>,
    pub interval: Option<(f64, f64)>,
    pub discontinuity: bool,
    /// field → (old null rate, new null rate), for changes above 5 points.
    pub null_rate_changes: BTreeMap<String, (f64, f64)>,
    pub new_fields: Vec<String>,
    pub vanished_fields: Vec<String>,
}

/// Counts of one event × segment or bridge on both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counted {
    pub old: u64,
    pub new: u64,
    pub ratio: Option<f64>,
    pub interval: Option<(f64, f64)>,
    /// 1, or a bridge's expected ratio.
    pub expected: f64,
    pub discontinuity: bool,
}

impl Counted {
    fn new(old: u64, new: u64, expected: f64, tolerance: f64) -> Counted {
        let interval = ratio_interval(new, old);
        let discontinuity = match interval {
            Some(interval) => outside_band(interval, expected, tolerance),
            // Only on the new side is a discontinuity of its own.
            None => new > 0,
        };
        Counted {
            old,
            new,
            ratio: (old > 0).then(|| new as f64 / old as f64),
            interval,
            expected,
            discontinuity,
        }
    }
}

/// The whole offline comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub tolerance: f64,
    pub events: BTreeMap<String, EventDiff>,
    /// Each event name by segment: `item_view platform=android`.
    pub segments: BTreeMap<String, Counted>,
    /// Splits and merges (`[[bridge]]`): the total and `label dimension=value` rows.
    pub bridges: BTreeMap<String, Counted>,
    pub only_in_old: u64,
    pub only_in_new: u64,
    /// field → population stability index between old and new.
    pub psi: BTreeMap<String, f64>,
    pub discontinuities: Vec<String>,
    pub drifted: Vec<String>,
}

impl Comparison {
    /// True when nothing needs a look before cutting over.
    pub fn clean(&self) -> bool {
        self.discontinuities.is_empty() && self.drifted.is_empty()
    }

    /// A table for people.
    pub fn human(&self) -> String {
        let mut out = format!(
            "{:<28} {:>10} {:>10} {:>8}  {:<20} flag\n",
            "event", "old", "new", "ratio", "95% interval"
        );
        for (label, b) in self.bridges.iter().filter(|(k, _)| !k.contains(' ')) {
            out.push_str(&counted_line(label, b));
        }
        for (key, row) in self
            .segments
            .iter()
            .chain(&self.bridges)
            .filter(|(_, row)| row.discontinuity)
        {
            out.push_str(&counted_line(key, row));
        }
        for (name, e) in &self.events {
            let ratio = e.ratio.map_or("-".into(), |r| format!("{r:.3}"));
            let interval = e
                .interval
                .map_or("-".into(), |(lo, hi)| format!("[{lo:.3}, {hi:.3}]"));
            let flag = if e.discontinuity { "DISCONTINUITY" } else { "" };
            out.push_str(&format!(
                "{name:<28} {:>10} {:>10} {ratio:>8}  {interval:<20} {flag}\n",
                e.old, e.new
            ));
            for (field, (old, new)) in &e.null_rate_changes {
                out.push_str(&format!(
                    "    null rate of {field}: {:.1}% -> {:.1}%\n",
                    old * 100.0,
                    new * 100.0
                ));
            }
            if !e.new_fields.is_empty() {
                out.push_str(&format!("    new fields: {}\n", e.new_fields.join(", ")));
            }
            if !e.vanished_fields.is_empty() {
                out.push_str(&format!(
                    "    vanished fields: {}\n",
                    e.vanished_fields.join(", ")
                ));
            }
        }
        out.push_str(&format!(
            "events only in old: {}, only in new: {}\n",
            self.only_in_old, self.only_in_new
        ));
        for (field, psi) in &self.psi {
            let flag = if *psi > PSI_DRIFT { "  DRIFT" } else { "" };
            out.push_str(&format!("PSI {field}: {psi:.4}{flag}\n"));
        }
        out
    }
}

/// Compares the `events/` logs of two collector data dirs.
///
/// # Errors
/// Unreadable log files.
pub fn compare(
    old: &Path,
    new: &Path,
    mapping: &Mapping,
    tolerance: f64,
) -> Result<Comparison, ReadError> {
    let old_side = read_side(old, &mapping.rename)?;
    let new_side = read_side(new, &BTreeMap::new())?;
    // Renames were applied to the old side's names; splits and merges get rows of their
    // own and their names are judged there.
    let split_and_merge = mapping.without_renames();
    let split_or_merged = split_and_merge.mapped_names();
    let names: BTreeSet<&String> = old_side
        .counts
        .keys()
        .chain(new_side.counts.keys())
        .collect();
    let mut discontinuities = Vec::new();
    let mut events = BTreeMap::new();
    for name in names {
        let old_n = old_side.counts.get(name).copied().unwrap_or(0);
        let new_n = new_side.counts.get(name).copied().unwrap_or(0);
        let counted = Counted::new(old_n, new_n, 1.0, tolerance);
        let discontinuity = counted.discontinuity && !split_or_merged.contains(name);
        if discontinuity {
            discontinuities.push(name.clone());
        }
        let rate = |side: &Side, field: &str, n: u64| {
            let nulls = side
                .nulls
                .get(name)
                .and_then(|f| f.get(field))
                .copied()
                .unwrap_or(0);
            if n == 0 { 0.0 } else { nulls as f64 / n as f64 }
        };
        let mut null_rate_changes = BTreeMap::new();
        if old_n > 0 && new_n > 0 {
            for field in NULLABLE {
                let (a, b) = (rate(&old_side, field, old_n), rate(&new_side, field, new_n));
                if (a - b).abs() > NULL_RATE_CHANGE {
                    null_rate_changes.insert(field.to_owned(), (a, b));
                }
            }
        }
        let empty = BTreeSet::new();
        let (old_keys, new_keys) = (
            old_side.keys.get(name).unwrap_or(&empty),
            new_side.keys.get(name).unwrap_or(&empty),
        );
        let (new_fields, vanished_fields) = if old_n > 0 && new_n > 0 {
            (
                new_keys.difference(old_keys).cloned().collect(),
                old_keys.difference(new_keys).cloned().collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        events.insert(
            name.clone(),
            EventDiff {
                old: old_n,
                new: new_n,
                ratio: counted.ratio,
                interval: counted.interval,
                discontinuity,
                null_rate_changes,
                new_fields,
                vanished_fields,
            },
        );
    }
    let keys: BTreeSet<&String> = old_side
        .segment_counts
        .keys()
        .chain(new_side.segment_counts.keys())
        .collect();
    let segments: BTreeMap<String, Counted> = keys
        .into_iter()
        .map(|key| {
            let count = |side: &Side| side.segment_counts.get(key).copied().unwrap_or(0);
            let name = key.split(' ').next().unwrap_or(key);
            let mut row = Counted::new(count(&old_side), count(&new_side), 1.0, tolerance);
            row.discontinuity &= !split_or_merged.contains(name);
            (key.clone(), row)
        })
        .collect();
    discontinuities.extend(
        segments
            .iter()
            .filter(|(_, row)| row.discontinuity)
            .map(|(k, _)| k.clone()),
    );
    let mut bridges = BTreeMap::new();
    for bridge in split_and_merge.bridges() {
        let sum = |side: &Side, names: &[String], segment: Option<&str>| -> u64 {
            names
                .iter()
                .map(|name| match segment {
                    None => side.counts.get(name).copied().unwrap_or(0),
                    Some(segment) => side
                        .segment_counts
                        .get(&format!("{name} {segment}"))
                        .copied()
                        .unwrap_or(0),
                })
                .sum()
        };
        let segment_values: BTreeSet<&str> = old_side
            .segment_counts
            .keys()
            .chain(new_side.segment_counts.keys())
            .filter_map(|key| key.split_once(' '))
            .filter(|(name, _)| bridge.old.iter().chain(&bridge.new).any(|n| n == name))
            .map(|(_, segment)| segment)
            .collect();
        for segment in std::iter::once(None).chain(segment_values.into_iter().map(Some)) {
            let row = Counted::new(
                sum(&old_side, &bridge.old, segment),
                sum(&new_side, &bridge.new, segment),
                bridge.expected,
                tolerance,
            );
            let key = match segment {
                None => bridge.label.clone(),
                Some(segment) => format!("{} {segment}", bridge.label),
            };
            if row.discontinuity {
                discontinuities.push(key.clone());
            }
            bridges.insert(key, row);
        }
    }
    let mut psi = BTreeMap::new();
    let mut drifted = Vec::new();
    for field in CATEGORICAL {
        let empty = BTreeMap::new();
        let value = tollgate_report::population_stability(
            old_side.categories.get(field).unwrap_or(&empty),
            new_side.categories.get(field).unwrap_or(&empty),
        )
        .psi;
        if value > PSI_DRIFT {
            drifted.push(field.to_owned());
        }
        psi.insert(field.to_owned(), value);
    }
    Ok(Comparison {
        tolerance,
        events,
        segments,
        bridges,
        only_in_old: old_side.ids.difference(&new_side.ids).count() as u64,
        only_in_new: new_side.ids.difference(&old_side.ids).count() as u64,
        psi,
        discontinuities,
        drifted,
    })
}

fn counted_line(key: &str, row: &Counted) -> String {
    let ratio = row.ratio.map_or("-".into(), |r| format!("{r:.3}"));
    let interval = row
        .interval
        .map_or("-".into(), |(lo, hi)| format!("[{lo:.3}, {hi:.3}]"));
    let flag = if row.discontinuity {
        "DISCONTINUITY"
    } else {
        ""
    };
    format!(
        "{key:<28} {:>10} {:>10} {ratio:>8}  {interval:<20} {flag}{}\n",
        row.old,
        row.new,
        if row.expected == 1.0 {
            String::new()
        } else {
            format!(" (expected {:.3})", row.expected)
        }
    )
}

/// A collector's log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the log in {dir}: {source}")]
pub struct ReadError {
    pub dir: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn read_side(dir: &Path, rename: &BTreeMap<String, String>) -> Result<Side, ReadError> {
    let mut side = Side::default();
    let mut seen_per_name: HashMap<String, u64> = HashMap::new();
    tollgate_log::for_each_line(&dir.join("events"), |line| {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let raw_name = record["event_name"].as_str().unwrap_or("(unnamed)");
        let name = rename
            .get(raw_name)
            .map_or(raw_name, String::as_str)
            .to_owned();
        if let Some(id) = record["event_id"].as_str() {
            side.ids.insert(id.to_owned());
        }
        *side.counts.entry(name.clone()).or_default() += 1;
        for dimension in SEGMENTS {
            if let Some(value) = record[dimension].as_str() {
                *side
                    .segment_counts
                    .entry(format!("{name} {dimension}={value}"))
                    .or_default() += 1;
            }
        }
        *seen_per_name.entry(name.clone()).or_default() += 1;
        for field in NULLABLE {
            if record.get(field).is_none_or(Value::is_null) {
                *side
                    .nulls
                    .entry(name.clone())
                    .or_default()
                    .entry(field.to_owned())
                    .or_default() += 1;
            }
        }
        if let Some(properties) = record["properties"].as_object() {
            side.keys
                .entry(name.clone())
                .or_default()
                .extend(properties.keys().cloned());
        }
        for field in CATEGORICAL {
            let value = record[field].as_str().unwrap_or("(null)").to_owned();
            *side
                .categories
                .entry(field.to_owned())
                .or_default()
                .entry(value)
                .or_default() += 1;
        }
    })
    .map_err(|source| ReadError {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(side)
}
