//! Live comparison of old and new logging over the same traffic.
//!
//! For every mirrored request, each event's outcome on the primary (old), on the shadow
//! (new) and, when configured, on a second primary replica (old again, the A/A noise
//! floor) is counted per event name, per segment (platform, app_version, region,
//! source) and per event × segment. The bridge ratio of a row is new accepted / old
//! accepted; its 95 % interval comes from the Wilson score interval of
//! p = new / (new + old) (the conditional binomial view of two counts over the same
//! traffic), mapped back to a ratio with r = p / (1 − p). A discontinuity is an interval
//! that lies entirely outside expected × (1 ± tolerance) — and, with a replica, also
//! outside what old-vs-old shows (Diffy's noise floor: a difference the old logging has
//! with itself is not the migration's).
//!
//! Renames, splits and merges ([`crate::mapping`]) are rows of their own (`bridges`):
//! Σ new names accepted by the shadow ÷ Σ old names accepted by the primary against the
//! expected ratio, total and per segment. Names a bridge covers are not flagged on
//! their own.

mod render;
mod report;
mod stats;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mapping::{Bridge, Mapping};

pub use report::{EventReport, Latency, Noise, Report, Sides};
pub use stats::{outside_band, ratio_interval};
pub use tollgate_event::wire::{EXPLAIN_HEADER, OUTCOMES_HEADER, SOURCE_HEADER};
pub use wire::{Outcomes, Reply, Seen, Side, events_of, outcomes_of, readable_body};

/// Rows per table unless configured otherwise (`max_rows`).
pub const DEFAULT_MAX_ROWS: usize = 10_000;

#[derive(Default)]
struct State {
    mirrored: u64,
    status_mismatches: u64,
    events: HashMap<String, Sides>,
    segments: HashMap<String, Sides>,
    event_segments: HashMap<String, Sides>,
}

#[derive(Default)]
struct Latencies {
    primary: Option<hdrhistogram::Histogram<u64>>,
    shadow: Option<hdrhistogram::Histogram<u64>>,
    replica: Option<hdrhistogram::Histogram<u64>>,
}

/// Accumulates the comparison; shared by the mirror workers and the report endpoint.
pub struct Comparison {
    tolerance: f64,
    bridges: Vec<Bridge>,
    mapped: BTreeSet<String>,
    state: Mutex<State>,
    /// Apart from `state`: the primary path records here and must never wait for a
    /// comparison in progress.
    latency: Mutex<Latencies>,
    /// Copies dropped, by [`Dropped`] reason, and requests the primary did not answer:
    /// counted on the primary path, so lock-free (the shadow thread, which runs at idle
    /// priority, may hold `state` for a while).
    dropped: [AtomicU64; Dropped::ALL.len()],
    primary_errors: AtomicU64,
    /// Most rows per table (events, segments, event × segment); the keys are
    /// client-controlled, so past this new keys are counted under `other`.
    max_rows: usize,
}

/// Why a copy was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A body was larger than `max_body`.
    TooLarge,
    /// The client or the primary abandoned a body.
    Incomplete,
    /// The copy queue was full (by count or bytes).
    QueueFull,
    ShadowError,
    ShadowTimeout,
    ReplicaError,
    ReplicaTimeout,
}

impl Dropped {
    pub const ALL: [Dropped; 7] = [
        Dropped::TooLarge,
        Dropped::Incomplete,
        Dropped::QueueFull,
        Dropped::ShadowError,
        Dropped::ShadowTimeout,
        Dropped::ReplicaError,
        Dropped::ReplicaTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::TooLarge => "too_large",
            Dropped::Incomplete => "incomplete",
            Dropped::QueueFull => "queue_full",
            Dropped::ShadowError => "shadow_error",
            Dropped::ShadowTimeout => "shadow_timeout",
            Dropped::ReplicaError => "replica_error",
            Dropped::ReplicaTimeout => "replica_timeout",
        }
    }
}

/// Key of the row that counts what did not fit under `max_rows`.
pub const OTHER_ROW: &str = "other";

impl Comparison {
    pub fn new(tolerance: f64, mapping: &Mapping) -> Comparison {
        Comparison::with_max_rows(tolerance, mapping, DEFAULT_MAX_ROWS)
    }

    /// A comparison keeping at most `max_rows` rows per table.
    pub fn with_max_rows(tolerance: f64, mapping: &Mapping, max_rows: usize) -> Comparison {
        Comparison {
            tolerance,
            bridges: mapping.bridges(),
            mapped: mapping.mapped_names(),
            state: Mutex::new(State::default()),
            latency: Mutex::new(Latencies::default()),
            dropped: Default::default(),
            primary_errors: AtomicU64::new(0),
            max_rows: max_rows.max(1),
        }
    }

    /// Records one round trip of a side.
    pub fn latency(&self, side: Side, took: std::time::Duration) {
        let mut latencies = self.latency.lock().expect("latency lock");
        let histogram = match side {
            Side::Primary => &mut latencies.primary,
            Side::Shadow => &mut latencies.shadow,
            Side::Replica => &mut latencies.replica,
        };
        let histogram = histogram.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
        });
        let _ = histogram.record(took.as_micros().clamp(1, 600_000_000) as u64);
    }

    /// Counts a request the primary did not answer.
    pub fn primary_error(&self) {
        self.primary_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a copy that was not compared.
    pub fn dropped(&self, reason: Dropped) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one mirrored request's outcomes on every side (`target`: the request's
    /// path and query).
    pub fn record(
        &self,
        target: &str,
        request: &[u8],
        primary: Reply<'_>,
        shadow: Reply<'_>,
        replica: Option<Reply<'_>>,
    ) {
        let events = events_of(target, request);
        let old = outcomes_of(primary, events.len());
        let new = outcomes_of(shadow, events.len());
        let again = replica.map(|r| outcomes_of(r, events.len()));
        let source = old.source.or(new.source);
        let mut state = self.state.lock().expect("comparison lock");
        let state = &mut *state;
        state.mirrored += 1;
        if primary.status != shadow.status {
            state.status_mismatches += 1;
        }
        let mut key = String::with_capacity(64);
        for (i, event) in events.iter().enumerate() {
            let (o, n) = (outcome_at(&old, i), outcome_at(&new, i));
            let r = again.as_ref().map(|a| outcome_at(a, i));
            let count = |sides: &mut Sides| {
                bump(&mut sides.primary, o);
                bump(&mut sides.shadow, n);
                if let Some(r) = r {
                    bump(&mut sides.replica, r);
                }
            };
            // Only accepted events have a region: the old side's, else the new side's.
            let region = (old.regions.get(i).copied().flatten())
                .or_else(|| new.regions.get(i).copied().flatten());
            let name = event.event_name.as_ref();
            // A segment's total leaves out names a bridge covers: a split or merge
            // changes it by design, and the bridge's own rows judge it per segment.
            let mapped = self.mapped.contains(name);
            for (dimension, value) in [
                ("platform", event.platform.as_deref()),
                ("app_version", event.app_version.as_deref()),
                ("region", region),
                ("source", source),
            ] {
                let Some(value) = value else { continue };
                key.clear();
                let _ = write!(key, "{name} {dimension}={value}");
                count(row(&mut state.event_segments, &key, self.max_rows));
                if !mapped {
                    count(row(
                        &mut state.segments,
                        &key[name.len() + 1..],
                        self.max_rows,
                    ));
                }
            }
            count(row(&mut state.events, name, self.max_rows));
        }
    }

    pub fn report(&self) -> Report {
        let state = self.state.lock().expect("comparison lock");
        let mut discontinuities = Vec::new();
        let mut judge = |groups: &HashMap<String, Sides>| -> BTreeMap<String, EventReport> {
            // In key order, so that the list of discontinuities is too.
            let sorted: BTreeMap<&String, &Sides> = groups.iter().collect();
            sorted
                .into_iter()
                .map(|(key, sides)| {
                    let name = key.split(' ').next().unwrap_or(key);
                    let mut report = self.judge(sides, 1.0);
                    if self.mapped.contains(name) {
                        report.mapped = true;
                        report.discontinuity = false;
                    }
                    if report.discontinuity {
                        discontinuities.push(key.clone());
                    }
                    (key.clone(), report)
                })
                .collect()
        };
        let events = judge(&state.events);
        let segments = judge(&state.segments);
        let event_segments = judge(&state.event_segments);
        let mut bridges = BTreeMap::new();
        for bridge in &self.bridges {
            for (key, sides) in bridge_rows(bridge, &state.events, &state.event_segments) {
                let report = self.judge(&sides, bridge.expected);
                if report.discontinuity {
                    discontinuities.push(key.clone());
                }
                bridges.insert(key, report);
            }
        }
        let (mirrored, status_mismatches) = (state.mirrored, state.status_mismatches);
        let dropped = Dropped::ALL
            .iter()
            .map(|d| {
                (
                    d.as_str().to_owned(),
                    self.dropped[*d as usize].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let primary_errors = self.primary_errors.load(Ordering::Relaxed);
        drop(state);
        let latencies = self.latency.lock().expect("latency lock");
        let summary = |h: &Option<hdrhistogram::Histogram<u64>>| {
            h.as_ref().map_or_else(Latency::default, Latency::of)
        };
        let mut latency: BTreeMap<String, Latency> = [
            ("primary".to_owned(), summary(&latencies.primary)),
            ("shadow".to_owned(), summary(&latencies.shadow)),
        ]
        .into();
        if latencies.replica.is_some() {
            latency.insert("replica".to_owned(), summary(&latencies.replica));
        }
        Report {
            latency,
            mirrored,
            dropped,
            status_mismatches,
            primary_errors,
            tolerance: self.tolerance,
            events,
            segments,
            event_segments,
            bridges,
            discontinuities,
        }
    }

    fn judge(&self, sides: &Sides, expected: f64) -> EventReport {
        let old = Sides::accepted(&sides.primary);
        let new = Sides::accepted(&sides.shadow);
        let interval = ratio_interval(new, old);
        let outside = interval.is_some_and(|i| outside_band(i, expected, self.tolerance));
        let noise = (!sides.replica.is_empty()).then(|| {
            let again = Sides::accepted(&sides.replica);
            Noise {
                ratio: (old > 0).then(|| again as f64 / old as f64),
                interval: ratio_interval(again, old),
            }
        });
        // Beyond the noise: the new/old interval does not meet old/old's (scaled by
        // what the bridge expects).
        let within_noise = outside
            && noise
                .as_ref()
                .and_then(|n| n.interval)
                .zip(interval)
                .is_some_and(|((nlo, nhi), (lo, hi))| lo <= nhi * expected && hi >= nlo * expected);
        EventReport {
            outcomes: sides.clone(),
            ratio: (old > 0).then(|| new as f64 / old as f64),
            interval,
            expected,
            noise,
            within_noise,
            mapped: false,
            discontinuity: outside && !within_noise,
        }
    }
}

/// A side's outcome of event `i`; "none" when the side answered for fewer events.
fn outcome_at<'o>(outcomes: &'o Outcomes<'_>, i: usize) -> &'o str {
    outcomes.events.get(i).map_or("none", |e| e.as_ref())
}

/// The row of `key`, or of [`OTHER_ROW`] when the table holds `max` rows already.
fn row<'m>(rows: &'m mut HashMap<String, Sides>, key: &str, max: usize) -> &'m mut Sides {
    let key = if rows.contains_key(key) || rows.len() < max {
        key
    } else {
        OTHER_ROW
    };
    if !rows.contains_key(key) {
        rows.insert(key.to_owned(), Sides::default());
    }
    rows.get_mut(key).expect("just inserted")
}

/// Adds one to `key`'s count, allocating the key only the first time.
fn bump(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

/// A bridge's rows: its total and one per segment, summing the new names on the new
/// side (and the replica) and the old names on the old side.
fn bridge_rows(
    bridge: &Bridge,
    events: &HashMap<String, Sides>,
    event_segments: &HashMap<String, Sides>,
) -> BTreeMap<String, Sides> {
    let mut rows: BTreeMap<String, Sides> = BTreeMap::new();
    let mut add = |key: String, name: &str, sides: &Sides| {
        let (old, new) = (
            bridge.old.iter().any(|n| n == name),
            bridge.new.iter().any(|n| n == name),
        );
        if !old && !new {
            return;
        }
        let row = rows.entry(key).or_default();
        if old {
            *row.primary.entry("accepted".into()).or_default() += Sides::accepted(&sides.primary);
            if !sides.replica.is_empty() {
                *row.replica.entry("accepted".into()).or_default() +=
                    Sides::accepted(&sides.replica);
            }
        }
        if new {
            *row.shadow.entry("accepted".into()).or_default() += Sides::accepted(&sides.shadow);
        }
    };
    for (name, sides) in events {
        add(bridge.label.clone(), name, sides);
    }
    for (key, sides) in event_segments {
        if let Some((name, segment)) = key.split_once(' ') {
            add(format!("{} {segment}", bridge.label), name, sides);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn equal_counts_give_an_interval_around_one() {
        let (lo, hi) = ratio_interval(1000, 1000).unwrap();
        assert!(lo < 1.0 && hi > 1.0);
        assert!(lo > 0.9 && hi < 1.1, "{lo} {hi}");
        // Small samples give wide intervals.
        let (lo, hi) = ratio_interval(10, 10).unwrap();
        assert!(lo < 0.5 && hi > 2.0, "{lo} {hi}");
        assert_eq!(ratio_interval(0, 0), None);
    }

    fn reply<'a>(headers: &'a http::HeaderMap, body: &'a str) -> Reply<'a> {
        Reply {
            status: StatusCode::OK,
            headers,
            body: body.as_bytes(),
        }
    }

    const TWO: &str =
        r#"{"events":[{"event_name":"a","platform":"ios"},{"event_name":"b","platform":"ios"}]}"#;
    const BOTH: &str = r#"{"results":[{"status":"accepted"},{"status":"accepted"}]}"#;
    const ONLY_A: &str = r#"{"results":[{"status":"accepted"},{"status":"rejected","error":{"code":"unknown_event","path":"","message":"no schema"}}]}"#;

    #[test]
    fn a_halved_count_is_flagged_and_a_steady_one_is_not() {
        let c = Comparison::new(0.05, &Mapping::default());
        let none = http::HeaderMap::new();
        for i in 0..400 {
            let shadow = if i % 2 == 0 { BOTH } else { ONLY_A };
            c.record(
                "/v1/events",
                TWO.as_bytes(),
                reply(&none, BOTH),
                reply(&none, shadow),
                None,
            );
        }
        let report = c.report();
        assert_eq!(report.mirrored, 400);
        // b alone, on its platform, and in its platform's total.
        assert_eq!(
            report.discontinuities,
            ["b", "platform=ios", "b platform=ios"].map(String::from)
        );
        assert_eq!(report.events["b"].ratio, Some(0.5));
        assert_eq!(
            report.events["b"]
                .outcomes
                .shadow
                .get("rejected:unknown_event"),
            Some(&200)
        );
        assert!(!report.events["a"].discontinuity);
    }

    #[test]
    fn a_difference_old_logging_has_with_itself_is_noise_and_one_beyond_it_is_not() {
        let c = Comparison::new(0.05, &Mapping::default());
        let none = http::HeaderMap::new();
        // Event b: the replica (old again) and the shadow both lose half: noise.
        // Event a: only the shadow loses a quarter: the migration.
        const A_LOST: &str = r#"{"results":[{"status":"retry"},{"status":"accepted"}]}"#;
        for i in 0..800 {
            let replica = if i % 2 == 0 { BOTH } else { ONLY_A };
            let shadow = match i % 4 {
                0 => A_LOST,
                1 | 3 => ONLY_A,
                _ => BOTH,
            };
            c.record(
                "/v1/events",
                TWO.as_bytes(),
                reply(&none, BOTH),
                reply(&none, shadow),
                Some(reply(&none, replica)),
            );
        }
        let report = c.report();
        let b = &report.events["b"];
        assert!(b.within_noise && !b.discontinuity, "{b:?}");
        assert_eq!(b.noise.as_ref().unwrap().ratio, Some(0.5));
        let a = &report.events["a"];
        assert!(a.discontinuity && !a.within_noise, "{a:?}");
        assert_eq!(a.noise.as_ref().unwrap().ratio, Some(1.0));
        assert!(report.discontinuities.contains(&"a".to_owned()));
        assert!(!report.discontinuities.contains(&"b".to_owned()));
    }

    #[test]
    fn bridges_compare_new_names_to_old_ones_against_the_expected_ratio() {
        let mapping: Mapping = toml::from_str(
            "[rename]\nsignup = \"account_created\"\n[[bridge]]\nname = \"checkout\"\nold = [\"purchase\"]\nnew = [\"order_placed\", \"payment_captured\"]\nexpected_ratio = 2.0\n",
        )
        .unwrap();
        let c = Comparison::new(0.05, &mapping);
        let none = http::HeaderMap::new();
        // The client logs both ways (dual logging); the old collector knows the old
        // names, the new one the new names.
        let request = r#"{"events":[
            {"event_name":"signup","platform":"ios"},{"event_name":"account_created","platform":"ios"},
            {"event_name":"purchase","platform":"web"},{"event_name":"order_placed","platform":"web"},
            {"event_name":"payment_captured","platform":"web"}]}"#;
        let old = r#"{"results":[{"status":"accepted"},{"status":"rejected"},{"status":"accepted"},{"status":"rejected"},{"status":"rejected"}]}"#;
        let new_full = r#"{"results":[{"status":"rejected"},{"status":"accepted"},{"status":"rejected"},{"status":"accepted"},{"status":"accepted"}]}"#;
        // Every other request the new logging loses payment_captured.
        let new_lossy = r#"{"results":[{"status":"rejected"},{"status":"accepted"},{"status":"rejected"},{"status":"accepted"},{"status":"rejected"}]}"#;
        for i in 0..400 {
            let new = if i % 2 == 0 { new_full } else { new_lossy };
            c.record(
                "/v1/events",
                request.as_bytes(),
                reply(&none, old),
                reply(&none, new),
                None,
            );
        }
        let report = c.report();
        let rename = &report.bridges["signup→account_created"];
        assert_eq!(rename.ratio, Some(1.0));
        assert!(!rename.discontinuity);
        let checkout = &report.bridges["checkout"];
        assert_eq!((checkout.ratio, checkout.expected), (Some(1.5), 2.0));
        assert!(checkout.discontinuity);
        assert!(report.bridges["checkout platform=web"].discontinuity);
        // The mapped names are judged by their bridges only.
        assert!(report.events["signup"].mapped && !report.events["signup"].discontinuity);
        assert_eq!(
            report.discontinuities,
            ["checkout", "checkout platform=web"].map(String::from)
        );
    }

    #[test]
    fn explained_answers_give_outcomes_regions_and_source_for_segment_routes_too() {
        let mut headers = http::HeaderMap::new();
        headers.insert(SOURCE_HEADER, "web".parse().unwrap());
        headers.insert(
            OUTCOMES_HEADER,
            "accepted@eu,rejected:unknown_event".parse().unwrap(),
        );
        let outcomes = outcomes_of(reply(&headers, r#"{"success":true}"#), 2);
        assert_eq!(outcomes.events, ["accepted", "rejected:unknown_event"]);
        assert_eq!(outcomes.regions, [Some("eu"), None]);
        assert_eq!(outcomes.source, Some("web"));
        // Without the headers a Segment answer only has its status.
        let none = http::HeaderMap::new();
        assert_eq!(
            outcomes_of(reply(&none, r#"{"success":true}"#), 2).events,
            ["accepted", "accepted"]
        );

        let batch = r#"{"batch":[
            {"type":"track","event":"Order Completed","userId":"u1","context":{"app":{"version":"5.1.0"}}},
            {"type":"identify","userId":"u1"}],
          "context":{"device":{"type":"ios"}}}"#;
        let seen = events_of("/v1/batch", batch.as_bytes());
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].event_name, "order_completed");
        assert_eq!(seen[0].app_version.as_deref(), Some("5.1.0"));
        let track = events_of("/v1/track", br#"{"event":"Clicked","anonymousId":"d1"}"#);
        assert_eq!(track[0].event_name, "clicked");
    }

    #[test]
    fn client_chosen_names_cannot_grow_the_tables_past_their_cap() {
        let c = Comparison::with_max_rows(0.05, &Mapping::default(), 3);
        let none = http::HeaderMap::new();
        const ONE: &str = r#"{"results":[{"status":"accepted"}]}"#;
        for i in 0..50 {
            let request = format!(
                r#"{{"events":[{{"event_name":"name_{i}","platform":"p{i}","app_version":"{i}"}}]}}"#
            );
            c.record(
                "/v1/events",
                request.as_bytes(),
                reply(&none, ONE),
                reply(&none, ONE),
                None,
            );
        }
        let report = c.report();
        // Three rows, then `other` for the rest.
        assert_eq!(report.events.len(), 4, "{:?}", report.events.keys());
        assert_eq!(
            report.events[OTHER_ROW]
                .outcomes
                .primary
                .values()
                .sum::<u64>(),
            47
        );
        assert!(report.segments.len() <= 4);
        assert!(report.event_segments.len() <= 4);
    }

    #[test]
    fn primary_path_counters_do_not_wait_for_the_comparison() {
        let c = Comparison::new(0.05, &Mapping::default());
        // The shadow thread is in the middle of a comparison.
        let state = c.state.lock().unwrap();
        c.dropped(Dropped::QueueFull);
        c.primary_error();
        drop(state);
        let report = c.report();
        assert_eq!(report.dropped["queue_full"], 1);
        assert_eq!(report.primary_errors, 1);
    }
}
