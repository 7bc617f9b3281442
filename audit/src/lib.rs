//! `tollgate-collector audit`: declared expectations checked over the log where it lands.
//!
//! One streaming pass over `events/` (and a count of `quarantine/`), segment files in
//! order. Memory is bounded by the expectations, not by the log: duplicates are found
//! within `dedupe_window` (the ids of that window are kept, as 64-bit hashes), references
//! within their `within`, and per-segment tallies are capped. Each expectation becomes a
//! [`Check`] that passes, warns (within 20 % of its limit) or fails; any failure makes the
//! command exit non-zero, so it can gate a launch or a daily pipeline.

pub mod expectations;
mod html;
mod read;
mod volume;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use expectations::Expectations;
/// Every line of every segment of a log stream directory, in order (also used by the
/// load tester's reconciliation).
use read::{FieldValue, Rec};

/// Where the records are read from.
#[derive(Debug, Clone)]
pub enum AuditInput {
    /// A collector's data directory (holding `events/` and `quarantine/`).
    Dir(PathBuf),
    /// Kafka topics, read from the beginning until no message arrived for a while.
    Kafka(tollgate_log::TopicSource),
}

impl AuditInput {
    /// Calls `f` with every accepted record's JSON text.
    fn events(&self, f: impl FnMut(&str)) -> std::io::Result<()> {
        match self {
            AuditInput::Dir(dir) => tollgate_log::for_each_line(&dir.join("events"), f),
            AuditInput::Kafka(source) => topic_lines(source, &source.topic, f),
        }
    }

    /// Calls `f` with every quarantined record's JSON text.
    fn quarantine(&self, f: impl FnMut(&str)) -> std::io::Result<()> {
        match self {
            AuditInput::Dir(dir) => tollgate_log::for_each_line(&dir.join("quarantine"), f),
            AuditInput::Kafka(source) => match &source.quarantine_topic {
                Some(topic) => topic_lines(source, topic, f),
                None => Ok(()),
            },
        }
    }
}

fn topic_lines(
    source: &tollgate_log::TopicSource,
    topic: &str,
    f: impl FnMut(&str),
) -> std::io::Result<()> {
    source
        .lines(topic, f)
        .map(drop)
        .map_err(std::io::Error::other)
}

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub input: AuditInput,
    /// Only records with `timestamp_server` in `[since, until)` (unix µs).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// "Now" for freshness (unix µs).
    pub now: i64,
}

/// pass < warn < fail, so that sorting puts the worst first when reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One expectation's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: Status,
    /// e.g. `not_null`, `duplicate_rate`, `reference`.
    pub expectation: String,
    /// The event (or funnel, or reference) it concerns; empty for the whole log.
    pub subject: String,
    pub observed: f64,
    pub limit: f64,
    /// A sentence for the reader, naming the worst segment where one stands out.
    pub detail: String,
    /// For an anomalous volume series: its hours around the worst anomaly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
}

/// One series around an anomaly: observed counts and the expected band.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    /// Hours since the epoch of the worst anomaly.
    pub anomaly_hour: i64,
    pub points: Vec<ChartPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChartPoint {
    /// Hours since the epoch.
    pub hour: i64,
    pub label: String,
    pub observed: u64,
    pub expected: f64,
    pub low: f64,
    pub high: f64,
}

/// The audit's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub records: u64,
    pub quarantined: u64,
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// A terminal summary, worst first.
    pub fn human(&self) -> String {
        let mut out = format!(
            "audited {} records ({} quarantined)\n",
            self.records, self.quarantined
        );
        for c in &self.checks {
            let word = match c.status {
                Status::Pass => "pass",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "{word:<5} {:<16} {:<32} {}\n",
                c.expectation, c.subject, c.detail
            ));
        }
        let fails = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        out.push_str(&format!("{} checks, {} failed\n", self.checks.len(), fails));
        out
    }
}

/// Fail past the limit; warn within 20 % of a ceiling (or of a floor's headroom).
fn ceiling(observed: f64, limit: f64) -> Status {
    if observed > limit {
        Status::Fail
    } else if limit > 0.0 && observed > limit * 0.8 {
        Status::Warn
    } else {
        Status::Pass
    }
}

fn floor(observed: f64, limit: f64) -> Status {
    if observed < limit {
        Status::Fail
    } else if observed < limit + (1.0 - limit) * 0.2 {
        Status::Warn
    } else {
        Status::Pass
    }
}

/// FNV-1a over the parts (each followed by a separator byte): fast for the short keys
/// hashed for every record (ids, segment names).
fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Per-segment tallies are capped; segments past the cap count as `other`.
const MAX_SEGMENTS: usize = 1000;

/// Tally of one `not_null` field: overall and per (platform, app_version).
#[derive(Default)]
struct NullTally {
    total: u64,
    nulls: u64,
    /// Keyed by a hash of (platform, app_version): no allocation per record.
    segments: HashedMap<Segment>,
}

struct Segment {
    platform: String,
    version: String,
    total: u64,
    nulls: u64,
}

impl NullTally {
    /// Counts one record of the segment `(platform, version)`, whose hash is `key`.
    fn add(&mut self, mut key: u64, platform: &str, version: &str, null: bool) {
        self.total += 1;
        self.nulls += u64::from(null);
        if !self.segments.contains_key(&key) && self.segments.len() >= MAX_SEGMENTS {
            key = 0; // past the cap: one `other` segment
        }
        let segment = self.segments.entry(key).or_insert_with(|| {
            let (platform, version) = if key == 0 {
                ("other", "other")
            } else {
                (platform, version)
            };
            Segment {
                platform: platform.to_owned(),
                version: version.to_owned(),
                total: 0,
                nulls: 0,
            }
        });
        segment.total += 1;
        segment.nulls += u64::from(null);
    }

    /// The segment with the highest null rate (ties: the larger one).
    fn worst(&self) -> Option<(&Segment, f64)> {
        self.segments
            .values()
            .filter(|s| s.total > 0)
            .map(|s| (s, s.nulls as f64 / s.total as f64))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total.cmp(&b.0.total)))
    }
}

/// A hasher for keys that are already 64-bit hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Hash maps and sets keyed by 64-bit hashes.
type BuildPreHashed = std::hash::BuildHasherDefault<PreHashed>;
type HashedMap<V> = HashMap<u64, V, BuildPreHashed>;

/// Ids seen within a time window, oldest evicted first.
struct Window<V> {
    span: i64,
    map: HashedMap<V>,
    order: VecDeque<(i64, u64)>,
}

impl<V> Window<V> {
    fn new(span: Duration) -> Self {
        Window {
            span: span.as_micros() as i64,
            map: HashedMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Drops entries older than `now - span`, handing each to `expired`.
    fn evict(&mut self, now: i64, mut expired: impl FnMut(V)) {
        while let Some(&(t, key)) = self.order.front() {
            if t >= now - self.span {
                break;
            }
            self.order.pop_front();
            if let Some(v) = self.map.remove(&key) {
                expired(v);
            }
        }
    }
}

/// A reference's state: `to` keys seen recently, `from` records still unmatched.
struct RefState {
    seen: Window<()>,
    pending: Window<()>,
    from_total: u64,
    missing: u64,
}

/// Runs every expectation over the log.
///
/// # Errors
/// Unreadable segment files.
pub fn audit(options: &AuditOptions, expectations: &Expectations) -> std::io::Result<Report> {
    let defaults = &expectations.defaults;
    let by_name: HashMap<&str, usize> = expectations
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    // Tallies indexed like the expectations: [event][field], no key built per record.
    let mut nulls: Vec<Vec<NullTally>> = expectations
        .events
        .iter()
        .map(|e| e.not_null.iter().map(|_| NullTally::default()).collect())
        .collect();
    let mut bad_values: Vec<Vec<(u64, u64, Option<String>)>> = expectations
        .events
        .iter()
        .map(|e| vec![(0, 0, None); e.values.len()])
        .collect();
    let mut out_of_range: Vec<Vec<(u64, u64, Option<f64>)>> = expectations
        .events
        .iter()
        .map(|e| vec![(0, 0, None); e.ranges.len()])
        .collect();
    let mut ids: Window<()> = Window::new(defaults.dedupe_window);
    let mut duplicates = 0u64;
    let mut refs: Vec<RefState> = expectations
        .references
        .iter()
        .map(|r| RefState {
            seen: Window::new(r.within),
            pending: Window::new(r.within),
            from_total: 0,
            missing: 0,
        })
        .collect();
    let mut step_counts: HashMap<String, u64> = HashMap::new();
    for funnel in &expectations.funnels {
        for step in &funnel.steps {
            step_counts.insert(step.clone(), 0);
        }
    }
    let mut lateness = hdrhistogram::Histogram::<u64>::new(3).expect("valid histogram");
    let mut series = volume::Series::default();
    let splits: Vec<i64> = expectations
        .drift
        .iter()
        .map(|d| read::micros(&d.split).unwrap_or(i64::MAX))
        .collect();
    // Per drift: category counts before and after its split.
    let mut drift: Vec<[HashMap<String, u64>; 2]> = expectations
        .drift
        .iter()
        .map(|_| Default::default())
        .collect();
    let mut newest = i64::MIN;
    let mut records = 0u64;

    options.input.events(|line| {
        let Ok(rec) = serde_json::from_str::<Rec>(line) else {
            return;
        };
        let Some(t) = read::micros(&rec.timestamp_server) else {
            return;
        };
        if options.since.is_some_and(|s| t < s) || options.until.is_some_and(|u| t >= u) {
            return;
        }
        records += 1;
        if records.is_multiple_of(10_000_000) {
            tracing::info!(records, "audit: records read so far");
        }
        newest = newest.max(t);
        let _ = lateness.record(rec.lateness_ms.max(0) as u64);
        if let Some(volume) = &expectations.volume {
            series.add(volume, &rec, t);
        }

        if defaults.max_duplicate_rate.is_some() {
            ids.evict(t, |()| {});
            let key = hash(&[&rec.event_id]);
            if ids.map.insert(key, ()).is_some() {
                duplicates += 1;
            } else {
                ids.order.push_back((t, key));
            }
        }
        if let Some(n) = step_counts.get_mut(rec.event_name.as_ref()) {
            *n += 1;
        }
        let mut fields = read::Fields::new(&rec);
        if let Some(&i) = by_name.get(rec.event_name.as_ref()) {
            let e = &expectations.events[i];
            let platform = rec.platform.as_ref();
            let version = rec.app_version.as_deref().unwrap_or("none");
            let segment = hash(&[platform, version]) | 1; // 0 is `other`
            for (field, tally) in e.not_null.iter().zip(&mut nulls[i]) {
                tally.add(segment, platform, version, fields.get(field).is_null());
            }
            for ((field, allowed), entry) in e.values.iter().zip(&mut bad_values[i]) {
                if let Some(text) = fields.get(field).as_text() {
                    entry.0 += 1;
                    if !allowed.iter().any(|a| *a == text) {
                        entry.1 += 1;
                        entry.2.get_or_insert_with(|| text.into_owned());
                    }
                }
            }
            for ((field, range), entry) in e.ranges.iter().zip(&mut out_of_range[i]) {
                if let FieldValue::Number(x) = fields.get(field) {
                    entry.0 += 1;
                    if range.min.is_some_and(|m| x < m) || range.max.is_some_and(|m| x > m) {
                        entry.1 += 1;
                        entry.2.get_or_insert(x);
                    }
                }
            }
        }
        for ((d, &split), counts) in expectations.drift.iter().zip(&splits).zip(&mut drift) {
            if rec.event_name != d.event {
                continue;
            }
            let side = &mut counts[usize::from(t >= split)];
            let value = fields.get(&d.field);
            let text = value.as_text();
            let category = text.as_deref().unwrap_or("(null)");
            if let Some(n) = side.get_mut(category) {
                *n += 1;
            } else if side.len() < MAX_CATEGORIES {
                side.insert(category.to_owned(), 1);
            } else {
                *side.entry("(other)".to_owned()).or_default() += 1;
            }
        }
        for (r, state) in expectations.references.iter().zip(&mut refs) {
            let is_from = rec.event_name == r.from;
            let is_to = rec.event_name == r.to;
            if !is_from && !is_to {
                continue;
            }
            state.seen.evict(t, |()| {});
            let mut missing = 0;
            state.pending.evict(t, |()| missing += 1);
            state.missing += missing;
            let mut h = DefaultHasher::new();
            for k in &r.keys {
                fields.get(k).as_text().unwrap_or_default().hash(&mut h);
            }
            let key = h.finish();
            if is_to {
                if state.seen.map.insert(key, ()).is_none() {
                    state.seen.order.push_back((t, key));
                }
                // A `from` logged shortly before its `to` (another batch) is matched too.
                state.pending.map.remove(&key);
            }
            if is_from {
                state.from_total += 1;
                if !state.seen.map.contains_key(&key) && state.pending.map.insert(key, ()).is_none()
                {
                    state.pending.order.push_back((t, key));
                }
            }
        }
    })?;
    let mut quarantined = 0u64;
    options.input.quarantine(|line| {
        if let Ok(rec) = serde_json::from_str::<read::QuarantineRec>(line)
            && let Some(t) = read::micros(&rec.timestamp_server)
            && options.since.is_none_or(|s| t >= s)
            && options.until.is_none_or(|u| t < u)
        {
            quarantined += 1;
        }
    })?;
    // `from` records still unmatched when the log ends are missing: their `to` would
    // have had to be logged after them, which is where a logging failure shows.
    for state in &mut refs {
        state.missing += state.pending.map.len() as u64;
    }

    let mut checks = Vec::new();
    if let Some(limit) = defaults.max_duplicate_rate {
        let rate = ratio(duplicates, records);
        checks.push(Check {
            status: ceiling(rate, limit),
            expectation: "duplicate_rate".into(),
            subject: String::new(),
            observed: rate,
            limit,
            detail: format!(
                "{duplicates} event_ids logged again within {} ({:.4}% of {records}; limit {:.4}%)",
                humantime::format_duration(defaults.dedupe_window),
                rate * 100.0,
                limit * 100.0
            ),
            chart: None,
        });
    }
    if let Some(limit) = defaults.freshness {
        let age = if newest == i64::MIN {
            f64::INFINITY
        } else {
            (options.now - newest) as f64 / 1e6
        };
        checks.push(Check {
            status: ceiling(age, limit.as_secs_f64()),
            expectation: "freshness".into(),
            subject: String::new(),
            observed: age,
            limit: limit.as_secs_f64(),
            detail: format!(
                "newest record {:.0}s old (limit {})",
                age,
                humantime::format_duration(limit)
            ),
            chart: None,
        });
    }
    if let Some(limit) = defaults.max_lateness_p99 {
        let p99 = lateness.value_at_quantile(0.99) as f64 / 1000.0;
        checks.push(Check {
            status: ceiling(p99, limit.as_secs_f64()),
            expectation: "lateness_p99".into(),
            subject: String::new(),
            observed: p99,
            limit: limit.as_secs_f64(),
            detail: format!(
                "p50 {:.1}s, p99 {:.1}s (limit {})",
                lateness.value_at_quantile(0.5) as f64 / 1000.0,
                p99,
                humantime::format_duration(limit)
            ),
            chart: None,
        });
    }
    if let Some(limit) = defaults.min_valid_share {
        let share = if records + quarantined == 0 {
            1.0
        } else {
            records as f64 / (records + quarantined) as f64
        };
        checks.push(Check {
            status: floor(share, limit),
            expectation: "valid_share".into(),
            subject: String::new(),
            observed: share,
            limit,
            detail: format!(
                "{records} accepted, {quarantined} quarantined: {:.3}% valid (limit {:.3}%)",
                share * 100.0,
                limit * 100.0
            ),
            chart: None,
        });
    }
    for (i, e) in expectations.events.iter().enumerate() {
        for (field, tally) in e.not_null.iter().zip(&nulls[i]) {
            let rate = ratio(tally.nulls, tally.total);
            let mut detail = format!(
                "{field}: {} of {} null or empty ({:.2}%; limit {:.2}%)",
                tally.nulls,
                tally.total,
                rate * 100.0,
                e.max_null_rate * 100.0
            );
            if let Some((segment, worst)) = tally.worst()
                && tally.nulls > 0
            {
                detail.push_str(&format!(
                    "; worst segment platform={} app_version={}: {:.2}% of {}",
                    segment.platform,
                    segment.version,
                    worst * 100.0,
                    segment.total
                ));
            }
            checks.push(Check {
                status: ceiling(rate, e.max_null_rate),
                expectation: "not_null".into(),
                subject: format!("{}.{field}", e.name),
                observed: rate,
                limit: e.max_null_rate,
                detail,
                chart: None,
            });
        }
        // Values and ranges: zero tolerance, one example of a breach.
        let tallies = e
            .values
            .keys()
            .zip(&bad_values[i])
            .map(|(field, (n, bad, v))| {
                let example = v.as_ref().map(|v| format!("{v:?}"));
                (
                    "allowed_values",
                    field,
                    *n,
                    *bad,
                    example,
                    "outside the allowed set",
                    "within the allowed set",
                )
            });
        let ranges = e
            .ranges
            .keys()
            .zip(&out_of_range[i])
            .map(|(field, (n, bad, v))| {
                let example = v.map(|v| v.to_string());
                (
                    "range",
                    field,
                    *n,
                    *bad,
                    example,
                    "out of range",
                    "in range",
                )
            });
        for (expectation, field, n, bad, example, breach, fine) in tallies.chain(ranges) {
            checks.push(Check {
                status: if bad > 0 { Status::Fail } else { Status::Pass },
                expectation: expectation.into(),
                subject: format!("{}.{field}", e.name),
                observed: bad as f64,
                limit: 0.0,
                detail: match example {
                    Some(v) => format!("{bad} of {n} {breach}, e.g. {v}"),
                    None => format!("all {n} {fine}"),
                },
                chart: None,
            });
        }
    }
    for (r, state) in expectations.references.iter().zip(&refs) {
        let rate = ratio(state.missing, state.from_total);
        checks.push(Check {
            status: ceiling(rate, r.max_missing_rate),
            expectation: "reference".into(),
            subject: format!("{} -> {}", r.from, r.to),
            observed: rate,
            limit: r.max_missing_rate,
            detail: format!(
                "{} of {} {} without a {} sharing {} within {} ({:.2}%)",
                state.missing,
                state.from_total,
                r.from,
                r.to,
                r.keys.join(", "),
                humantime::format_duration(r.within),
                rate * 100.0
            ),
            chart: None,
        });
    }
    for f in &expectations.funnels {
        let counts: Vec<u64> = f.steps.iter().map(|s| step_counts[s]).collect();
        let increase = f
            .steps
            .iter()
            .zip(&counts)
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[1].1 > w[0].1)
            .map(|w| format!("{} ({}) > {} ({})", w[1].0, w[1].1, w[0].0, w[0].1));
        checks.push(Check {
            status: if increase.is_some() {
                Status::Fail
            } else {
                Status::Pass
            },
            expectation: "funnel".into(),
            subject: f.name.clone(),
            observed: counts.last().copied().unwrap_or(0) as f64,
            limit: counts.first().copied().unwrap_or(0) as f64,
            detail: match increase {
                Some(step) => format!("a later step has more events: {step}"),
                None => f
                    .steps
                    .iter()
                    .zip(&counts)
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect::<Vec<_>>()
                    .join(" ≥ "),
            },
            chart: None,
        });
    }
    if let Some(volume) = &expectations.volume {
        checks.extend(series.checks(volume));
    }
    for (d, [baseline, current]) in expectations.drift.iter().zip(&drift) {
        let tollgate_report::Drift {
            psi,
            largest: worst,
            new,
        } = tollgate_report::population_stability(baseline, current);
        let mut detail = format!("PSI {psi:.3} (limit {})", d.max_psi);
        if let Some(worst) = worst {
            detail.push_str(&format!("; largest shift: {worst:?}"));
        }
        if !new.is_empty() {
            detail.push_str(&format!("; new values: {}", new.join(", ")));
        }
        if baseline.is_empty() || current.is_empty() {
            detail = "no records on one side of the split: nothing to compare".into();
        }
        checks.push(Check {
            status: if baseline.is_empty() || current.is_empty() {
                Status::Warn
            } else {
                ceiling(psi, d.max_psi)
            },
            expectation: "drift".into(),
            subject: format!("{}.{}", d.event, d.field),
            observed: psi,
            limit: d.max_psi,
            detail,
            chart: None,
        });
    }
    checks.sort_by_key(|c| std::cmp::Reverse(c.status));
    Ok(Report {
        records,
        quarantined,
        checks,
    })
}

/// Categories counted per drift side; the rest are `(other)`.
const MAX_CATEGORIES: usize = 200;

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `--since`/`--until`/`--now` values: RFC 3339 timestamps as unix µs.
pub fn parse_time(text: &str) -> Result<i64, String> {
    read::micros(text).ok_or_else(|| format!("{text:?} is not an RFC 3339 UTC timestamp"))
}

/// The audit of a collector's data directory over its whole history.
pub fn audit_dir(log: &Path, expectations: &Expectations, now: i64) -> std::io::Result<Report> {
    audit(
        &AuditOptions {
            input: AuditInput::Dir(log.to_owned()),
            since: None,
            until: None,
            now,
        },
        expectations,
    )
}
