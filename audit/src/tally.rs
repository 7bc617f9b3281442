//! What the audit counts, block by block: a worker turns one block of log lines into a
//! [`Partial`]; the merger absorbs the partials in log order into the [`Totals`].
//!
//! Counts (nulls, values, volume, drift, the quarantine) add up in any order. A block's
//! tallies are not capped (a block is bounded); the merge applies the caps, admitting
//! keys in order of first appearance ([`Ordered`]), so merging in log order counts
//! exactly what one pass would. Checks that depend on order — duplicates within a window,
//! references within `within` — keep only compact facts per record (time, key hash) in
//! the partial, and the merger runs their windows over those facts in log order.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use super::expectations::Expectations;
use super::ordered::{HashedMap, Ordered, hash};
use super::quarantine;
use super::read::{self, FieldValue, Rec};
use super::volume::Series;

/// Per-segment tallies are capped; segments past the cap count as `other`.
pub const MAX_SEGMENTS: usize = 1000;
/// Categories counted per drift side; the rest are `(other)`.
pub const MAX_CATEGORIES: usize = 200;

/// Whether a record is judged or only read as history for the checks that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    History = 0,
    Window = 1,
}

/// What every worker needs to know: the expectations, indexed, and the time spans.
pub struct Plan<'e> {
    pub expectations: &'e Expectations,
    by_name: HashMap<&'e str, usize>,
    /// Funnel step names, each once, and their index.
    pub steps: Vec<&'e str>,
    step_index: HashMap<&'e str, usize>,
    /// Each drift's split (unix µs), if it has one.
    splits: Vec<Option<i64>>,
    /// The judged window `[since, until)`; records before `since` back to `read_from`
    /// are history.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub read_from: Option<i64>,
}

impl<'e> Plan<'e> {
    pub fn new(
        expectations: &'e Expectations,
        since: Option<i64>,
        until: Option<i64>,
        read_from: Option<i64>,
    ) -> Self {
        let by_name = expectations
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        let mut steps: Vec<&str> = Vec::new();
        for step in expectations.funnels.iter().flat_map(|f| &f.steps) {
            if !steps.contains(&step.as_str()) {
                steps.push(step);
            }
        }
        let step_index = steps.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let splits = expectations
            .drift
            .iter()
            .map(|d| d.split.as_deref().and_then(read::micros))
            .collect();
        Plan {
            expectations,
            by_name,
            steps,
            step_index,
            splits,
            since,
            until,
            read_from,
        }
    }

    fn period(&self, t: i64) -> Option<Period> {
        if self.read_from.is_some_and(|r| t < r) || self.until.is_some_and(|u| t >= u) {
            None
        } else if self.since.is_some_and(|s| t < s) {
            Some(Period::History)
        } else {
            Some(Period::Window)
        }
    }
}

/// Tally of one `not_null` field: overall and per (platform, app_version).
#[derive(Default)]
pub struct NullTally {
    pub total: u64,
    pub nulls: u64,
    /// Keyed by a hash of (platform, app_version): no allocation per record.
    segments: Ordered<Segment>,
}

pub struct Segment {
    pub platform: String,
    pub version: String,
    pub total: u64,
    pub nulls: u64,
}

impl NullTally {
    /// Counts one record of the segment `(platform, version)`, whose hash is `key`.
    fn add(&mut self, key: u64, platform: &str, version: &str, null: bool) {
        self.total += 1;
        self.nulls += u64::from(null);
        let segment = self.segments.entry(key, || Segment {
            platform: platform.to_owned(),
            version: version.to_owned(),
            total: 0,
            nulls: 0,
        });
        segment.total += 1;
        segment.nulls += u64::from(null);
    }

    fn absorb(&mut self, later: NullTally) {
        self.total += later.total;
        self.nulls += later.nulls;
        let other = |_: &Segment| Segment {
            platform: "other".into(),
            version: "other".into(),
            total: 0,
            nulls: 0,
        };
        self.segments
            .absorb(later.segments, MAX_SEGMENTS, (0, &other), |a, b| {
                a.total += b.total;
                a.nulls += b.nulls;
            });
    }

    /// The segment with the highest null rate (ties: the larger one).
    pub fn worst(&self) -> Option<(&Segment, f64)> {
        self.segments
            .values()
            .filter(|s| s.total > 0)
            .map(|s| (s, s.nulls as f64 / s.total as f64))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total.cmp(&b.0.total)))
    }
}

/// Records checked against allowed values or a range: how many, how many broke it,
/// and the first that did.
pub struct Breaches<T> {
    pub checked: u64,
    pub bad: u64,
    pub example: Option<T>,
}

impl<T> Default for Breaches<T> {
    fn default() -> Self {
        Breaches {
            checked: 0,
            bad: 0,
            example: None,
        }
    }
}

impl<T> Breaches<T> {
    fn absorb(&mut self, later: Breaches<T>) {
        self.checked += later.checked;
        self.bad += later.bad;
        if self.example.is_none() {
            self.example = later.example;
        }
    }
}

/// Category counts of one drift side, with the category text.
pub type Categories = Ordered<(String, u64)>;

/// Counts that add up in any order.
pub struct Tallies {
    /// Records in the judged window, and read as history.
    pub records: u64,
    pub history_records: u64,
    pub quarantined: u64,
    pub quarantined_history: u64,
    /// The newest judged `timestamp_server`.
    pub newest: i64,
    pub lateness: hdrhistogram::Histogram<u64>,
    /// Indexed like the expectations: [event][field].
    pub nulls: Vec<Vec<NullTally>>,
    pub values: Vec<Vec<Breaches<String>>>,
    pub ranges: Vec<Vec<Breaches<f64>>>,
    /// Indexed like [`Plan::steps`].
    pub steps: Vec<u64>,
    pub series: Series,
    /// Per drift: category counts of [baseline, judged].
    pub drift: Vec<[Categories; 2]>,
    pub quarantine: quarantine::Tally,
}

impl Tallies {
    fn new(plan: &Plan) -> Self {
        let e = plan.expectations;
        Tallies {
            records: 0,
            history_records: 0,
            quarantined: 0,
            quarantined_history: 0,
            newest: i64::MIN,
            lateness: hdrhistogram::Histogram::new(3).expect("3 significant digits are valid"),
            nulls: e
                .events
                .iter()
                .map(|e| e.not_null.iter().map(|_| NullTally::default()).collect())
                .collect(),
            values: e
                .events
                .iter()
                .map(|e| e.values.iter().map(|_| Breaches::default()).collect())
                .collect(),
            ranges: e
                .events
                .iter()
                .map(|e| e.ranges.iter().map(|_| Breaches::default()).collect())
                .collect(),
            steps: vec![0; plan.steps.len()],
            series: Series::default(),
            drift: e.drift.iter().map(|_| Default::default()).collect(),
            quarantine: quarantine::Tally::default(),
        }
    }

    /// Adds the tallies of the records that follow these.
    fn absorb(&mut self, later: Tallies) {
        self.records += later.records;
        self.history_records += later.history_records;
        self.quarantined += later.quarantined;
        self.quarantined_history += later.quarantined_history;
        self.newest = self.newest.max(later.newest);
        // Same bounds on both sides: adding cannot fail.
        let _ = self.lateness.add(&later.lateness);
        for (mine, theirs) in self.nulls.iter_mut().zip(later.nulls) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.absorb(b);
            }
        }
        for (mine, theirs) in self.values.iter_mut().zip(later.values) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.absorb(b);
            }
        }
        for (mine, theirs) in self.ranges.iter_mut().zip(later.ranges) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.absorb(b);
            }
        }
        for (a, b) in self.steps.iter_mut().zip(later.steps) {
            *a += b;
        }
        self.series.absorb(later.series);
        let other_key = hash(&["(other)"]);
        let other = |_: &(String, u64)| ("(other)".to_owned(), 0);
        for (mine, theirs) in self.drift.iter_mut().zip(later.drift) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.absorb(b, MAX_CATEGORIES, (other_key, &other), |x, y| x.1 += y.1);
            }
        }
        self.quarantine.absorb(later.quarantine);
    }
}

/// A record's `event_id` for the duplicate check.
struct IdFact {
    t: i64,
    key: u64,
    judged: bool,
}

/// A record taking part in a reference: a `to` (seen, judged or history) or a judged
/// `from`.
struct RefFact {
    t: i64,
    key: u64,
    reference: usize,
    from: bool,
    to: bool,
}

/// One block's findings.
pub struct Partial {
    tallies: Tallies,
    ids: Vec<IdFact>,
    refs: Vec<RefFact>,
}

impl Partial {
    pub fn new(plan: &Plan) -> Self {
        Partial {
            tallies: Tallies::new(plan),
            ids: Vec::new(),
            refs: Vec::new(),
        }
    }

    /// Counts one line of the events log.
    pub fn event(&mut self, plan: &Plan, line: &str) {
        let Ok(rec) = serde_json::from_str::<Rec>(line) else {
            return;
        };
        let Some(t) = read::micros(&rec.timestamp_server) else {
            return;
        };
        let Some(period) = plan.period(t) else {
            return;
        };
        let judged = period == Period::Window;
        let expectations = plan.expectations;
        let tallies = &mut self.tallies;
        if let Some(volume) = &expectations.volume {
            tallies.series.add(volume, &rec, t);
        }
        if expectations.defaults.max_duplicate_rate.is_some() {
            self.ids.push(IdFact {
                t,
                key: hash(&[&rec.event_id]),
                judged,
            });
        }
        let platform = rec.platform.as_ref();
        let version = rec.app_version.as_deref().unwrap_or("none");
        tallies
            .quarantine
            .accepted(&rec.event_name, platform, version, period);
        let mut fields = read::Fields::new(&rec);
        for (i, (r, split)) in expectations.drift.iter().zip(&plan.splits).enumerate() {
            if rec.event_name != r.event {
                continue;
            }
            // With a split: before it is the baseline, after it the judged records.
            // Without: the history is the baseline.
            let side = match split {
                Some(split) if t < *split => 0,
                Some(_) if !judged => continue,
                _ => usize::from(judged),
            };
            let value = fields.get(&r.field);
            let text = value.as_text();
            let category = text.as_deref().unwrap_or("(null)");
            tallies.drift[i][side]
                .entry(hash(&[category]), || (category.to_owned(), 0))
                .1 += 1;
        }
        for (i, r) in expectations.references.iter().enumerate() {
            let from = judged && rec.event_name == r.from;
            let to = rec.event_name == r.to;
            if !from && !to {
                continue;
            }
            let mut h = DefaultHasher::new();
            for k in &r.keys {
                fields.get(k).as_text().unwrap_or_default().hash(&mut h);
            }
            self.refs.push(RefFact {
                t,
                key: h.finish(),
                reference: i,
                from,
                to,
            });
        }
        if !judged {
            tallies.history_records += 1;
            return;
        }
        tallies.records += 1;
        tallies.newest = tallies.newest.max(t);
        let _ = tallies.lateness.record(rec.lateness_ms.max(0) as u64);
        if let Some(&i) = plan.step_index.get(rec.event_name.as_ref()) {
            tallies.steps[i] += 1;
        }
        let Some(&i) = plan.by_name.get(rec.event_name.as_ref()) else {
            return;
        };
        let e = &expectations.events[i];
        let segment = hash(&[platform, version]) | 1; // 0 is `other`
        for (field, tally) in e.not_null.iter().zip(&mut tallies.nulls[i]) {
            tally.add(segment, platform, version, fields.get(field).is_null());
        }
        for ((field, allowed), entry) in e.values.iter().zip(&mut tallies.values[i]) {
            if let Some(text) = fields.get(field).as_text() {
                entry.checked += 1;
                if !allowed.iter().any(|a| *a == text) {
                    entry.bad += 1;
                    entry.example.get_or_insert_with(|| text.into_owned());
                }
            }
        }
        for ((field, range), entry) in e.ranges.iter().zip(&mut tallies.ranges[i]) {
            if let FieldValue::Number(x) = fields.get(field) {
                entry.checked += 1;
                if range.min.is_some_and(|m| x < m) || range.max.is_some_and(|m| x > m) {
                    entry.bad += 1;
                    entry.example.get_or_insert(x);
                }
            }
        }
    }

    /// Counts one line of the quarantine.
    pub fn quarantined(&mut self, plan: &Plan, line: &str) {
        let Ok(rec) = serde_json::from_str::<read::QuarantineRec>(line) else {
            return;
        };
        let Some(t) = read::micros(&rec.timestamp_server) else {
            return;
        };
        let Some(period) = plan.period(t) else {
            return;
        };
        match period {
            Period::Window => self.tallies.quarantined += 1,
            Period::History => self.tallies.quarantined_history += 1,
        }
        self.tallies.quarantine.rejected(&rec, period);
    }
}

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
pub struct RefState {
    seen: Window<()>,
    pending: Window<()>,
    pub from_total: u64,
    pub missing: u64,
}

/// Everything counted so far, in log order.
pub struct Totals {
    pub tallies: Tallies,
    ids: Window<()>,
    pub duplicates: u64,
    pub refs: Vec<RefState>,
}

impl Totals {
    pub fn new(plan: &Plan) -> Self {
        let e = plan.expectations;
        Totals {
            tallies: Tallies::new(plan),
            ids: Window::new(e.defaults.dedupe_window),
            duplicates: 0,
            refs: e
                .references
                .iter()
                .map(|r| RefState {
                    seen: Window::new(r.within),
                    pending: Window::new(r.within),
                    from_total: 0,
                    missing: 0,
                })
                .collect(),
        }
    }

    /// Adds the block that follows every block absorbed so far.
    pub fn absorb(&mut self, later: Partial) {
        self.tallies.absorb(later.tallies);
        for IdFact { t, key, judged } in later.ids {
            self.ids.evict(t, |()| {});
            if self.ids.map.insert(key, ()).is_some() {
                self.duplicates += u64::from(judged);
            } else {
                self.ids.order.push_back((t, key));
            }
        }
        for fact in later.refs {
            let state = &mut self.refs[fact.reference];
            state.seen.evict(fact.t, |()| {});
            let mut missing = 0;
            state.pending.evict(fact.t, |()| missing += 1);
            state.missing += missing;
            if fact.to {
                if state.seen.map.insert(fact.key, ()).is_none() {
                    state.seen.order.push_back((fact.t, fact.key));
                }
                // A `from` logged shortly before its `to` (another batch) is matched too.
                state.pending.map.remove(&fact.key);
            }
            if fact.from {
                state.from_total += 1;
                if !state.seen.map.contains_key(&fact.key)
                    && state.pending.map.insert(fact.key, ()).is_none()
                {
                    state.pending.order.push_back((fact.t, fact.key));
                }
            }
        }
    }

    /// Ends the log: `from` records still unmatched are missing, since their `to` would
    /// have had to be logged after them, which is where a logging failure shows.
    pub fn finish(&mut self) {
        for state in &mut self.refs {
            state.missing += state.pending.map.len() as u64;
        }
    }
}
