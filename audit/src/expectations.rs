//! The expectations file: what the log's data must look like.
//!
//! ```toml
//! [defaults]                      # every event name
//! max_duplicate_rate = 0.001      # event_ids logged more than once, within dedupe_window
//! dedupe_window = "24h"
//! freshness = "15m"               # newest timestamp_server no older than this
//! max_lateness_p99 = "6h"
//! min_valid_share = 0.99          # accepted ÷ (accepted + quarantined)
//!
//! [[events]]
//! name = "share_submit"
//! not_null = ["user_id", "session_id", "properties.action_id"]
//! max_null_rate = 0.01
//! values = { "properties.channel" = ["whatsapp", "sms", "copy_link"] }
//! ranges = { "properties.position" = { min = 0, max = 500 } }
//!
//! [[references]]
//! from = "share_success"          # every share_success …
//! to = "share_submit"             # … has a share_submit with the same keys …
//! keys = ["session_id", "properties.action_id"]
//! within = "1h"                   # … logged at most this long before it
//! max_missing_rate = 0.0
//!
//! [[funnels]]
//! name = "share"
//! steps = ["share_open", "share_submit", "share_success"]   # counts never increase
//!
//! [[drift]]
//! event = "share_submit"
//! field = "properties.channel"
//! split = "2026-11-22T00:00:00Z"  # before: baseline; from then on: judged (optional:
//! max_psi = 0.2                   # without it, the span before --since is the baseline)
//!
//! [quarantine]                    # rejected shares against their history (--since)
//! min_events = 200
//! min_rise = 0.01
//! threshold = 5.0
//! history = "7d"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub events: Vec<EventExpectations>,
    #[serde(default)]
    pub references: Vec<Reference>,
    #[serde(default)]
    pub funnels: Vec<Funnel>,
    /// Volume anomalies per event × segment against an hour-of-week baseline.
    pub volume: Option<Volume>,
    #[serde(default)]
    pub drift: Vec<Drift>,
    /// Shares of rejected events per event × error × segment against their history.
    #[serde(default)]
    pub quarantine: QuarantineRules,
}

/// When a rise in the share of rejected events is flagged: the share of an event's
/// records (accepted + quarantined) rejected with one error code at one path, in one
/// (platform, app_version) or overall, in the judged window against the history before
/// it. Judged only with `--since` (the history is what is read before it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineRules {
    /// Segments with fewer records than this in the window (or in the history behind a
    /// baseline) are not judged.
    pub min_events: u64,
    /// A share must rise by at least this much (0.01: one percentage point) …
    pub min_rise: f64,
    /// … and by this many standard errors of the history share.
    pub threshold: f64,
    /// How much history before `--since` gives the baseline share.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
}

impl Default for QuarantineRules {
    fn default() -> Self {
        QuarantineRules {
            min_events: 200,
            min_rise: 0.01,
            threshold: 5.0,
            history: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Distribution drift of a categorical field: records before `split` are the baseline,
/// records from `split` on are compared with it (population stability index). Without
/// a split, the judged window is compared with the same span before it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    pub event: String,
    pub field: String,
    /// RFC 3339 time dividing baseline from judged records.
    #[serde(default)]
    pub split: Option<String>,
    /// PSI above this fails (0.1: small shift, 0.25: large).
    #[serde(default = "default_psi")]
    pub max_psi: f64,
}

fn default_psi() -> f64 {
    0.2
}

/// Hourly volume of each event, per segment, against the same hour of previous weeks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Volume {
    /// Event names watched; empty: every event name in the log.
    pub events: Vec<String>,
    /// Segment dimensions: `platform`, `app_version`, `region`, `source`.
    pub segments: Vec<String>,
    /// Weeks of history an hour needs before it is judged.
    pub min_weeks: usize,
    /// |robust z| above this is an anomaly (z = (observed − median) ÷ (1.4826 · MAD),
    /// the spread never below the Poisson √median).
    pub threshold: f64,
    /// Hours expecting fewer events than this are not judged (too noisy).
    pub min_expected: f64,
    /// Days whose traffic is known to be unusual (holidays, launches, outages being
    /// handled): never judged and never part of a baseline.
    pub calendar: Vec<CalendarDay>,
}

impl Default for Volume {
    fn default() -> Self {
        Volume {
            events: Vec::new(),
            segments: vec!["platform".into(), "app_version".into(), "region".into()],
            min_weeks: 2,
            threshold: 5.0,
            min_expected: 20.0,
            calendar: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    #[serde(default)]
    pub reason: String,
}

/// Checks over every event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    pub max_duplicate_rate: Option<f64>,
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    #[serde(with = "humantime_serde")]
    pub freshness: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub max_lateness_p99: Option<Duration>,
    pub min_valid_share: Option<f64>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            max_duplicate_rate: None,
            dedupe_window: Duration::from_secs(24 * 3600),
            freshness: None,
            max_lateness_p99: None,
            min_valid_share: None,
        }
    }
}

/// Checks of one event name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventExpectations {
    pub name: String,
    /// Fields that must be present, not null and not empty (`user_id`,
    /// `properties.action_id`, `context.locale`, …).
    #[serde(default)]
    pub not_null: Vec<String>,
    /// Largest share of records allowed to break `not_null`, per field (default 0).
    #[serde(default)]
    pub max_null_rate: f64,
    /// Allowed values of a field (strings; numbers and booleans compare as text).
    #[serde(default)]
    pub values: BTreeMap<String, Vec<String>>,
    /// Numeric ranges of a field.
    #[serde(default)]
    pub ranges: BTreeMap<String, Range>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Referential integrity between two events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub from: String,
    pub to: String,
    pub keys: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    #[serde(default)]
    pub max_missing_rate: f64,
}

/// Steps whose counts must never increase from one step to the next.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Funnel {
    pub name: String,
    pub steps: Vec<String>,
}

impl Expectations {
    /// Reads and checks an expectations file.
    ///
    /// # Errors
    /// Unreadable or invalid TOML, or inconsistent values, each named.
    pub fn load(path: &Path) -> Result<Expectations, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let expectations: Expectations =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let problems = expectations.problems();
        if problems.is_empty() {
            Ok(expectations)
        } else {
            Err(format!(
                "{}:\n  - {}",
                path.display(),
                problems.join("\n  - ")
            ))
        }
    }

    /// Every inconsistency, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let share = |v: Option<f64>| v.is_none_or(|v| (0.0..=1.0).contains(&v));
        if !share(self.defaults.max_duplicate_rate) || !share(self.defaults.min_valid_share) {
            problems.push("defaults: rates and shares are between 0 and 1".into());
        }
        for (i, e) in self.events.iter().enumerate() {
            if !(0.0..=1.0).contains(&e.max_null_rate) {
                problems.push(format!("events[{i}].max_null_rate: between 0 and 1"));
            }
            for (field, range) in &e.ranges {
                if let (Some(min), Some(max)) = (range.min, range.max)
                    && min > max
                {
                    problems.push(format!("events[{i}].ranges.{field}: min is above max"));
                }
            }
        }
        for (i, r) in self.references.iter().enumerate() {
            if r.keys.is_empty() {
                problems.push(format!("references[{i}].keys: name at least one field"));
            }
        }
        if let Some(v) = &self.volume {
            for dim in &v.segments {
                if !["platform", "app_version", "region", "source"].contains(&dim.as_str()) {
                    problems.push(format!(
                        "volume.segments: {dim:?} is not platform, app_version, region or source"
                    ));
                }
            }
            for day in &v.calendar {
                if super::read::micros(&format!("{}T00:00:00Z", day.date)).is_none() {
                    problems.push(format!(
                        "volume.calendar: {:?} is not a YYYY-MM-DD date",
                        day.date
                    ));
                }
            }
            if v.min_weeks == 0 || v.threshold <= 0.0 {
                problems.push("volume: min_weeks and threshold must be above 0".into());
            }
        }
        for (i, d) in self.drift.iter().enumerate() {
            if let Some(split) = &d.split
                && super::read::micros(split).is_none()
            {
                problems.push(format!(
                    "drift[{i}].split: {split:?} is not an RFC 3339 time"
                ));
            }
            if d.max_psi <= 0.0 {
                problems.push(format!("drift[{i}].max_psi: must be above 0"));
            }
        }
        let q = &self.quarantine;
        if !(0.0..=1.0).contains(&q.min_rise) || q.threshold <= 0.0 {
            problems.push("quarantine: min_rise is between 0 and 1, threshold above 0".into());
        }
        for (i, f) in self.funnels.iter().enumerate() {
            if f.steps.len() < 2 {
                problems.push(format!(
                    "funnels[{i}].steps: a funnel has two steps or more"
                ));
            }
        }
        problems
    }
}
