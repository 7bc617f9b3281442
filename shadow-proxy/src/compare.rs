//! Live comparison of old and new logging over the same traffic.
//!
//! For every mirrored request, each event's outcome on the primary (old) and on the
//! shadow (new) is counted per event name. The bridge ratio of a name is
//! new accepted / old accepted; its 95 % interval comes from the Wilson score interval
//! of p = new / (new + old) (the conditional binomial view of two counts over the same
//! traffic), mapped back to a ratio with r = p / (1 − p). A discontinuity is an interval
//! that lies entirely outside 1 ± tolerance.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

/// Outcome counts of one event name on both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sides {
    pub primary: BTreeMap<String, u64>,
    pub shadow: BTreeMap<String, u64>,
}

/// One event name's line in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    pub outcomes: Sides,
    /// shadow accepted / primary accepted.
    pub ratio: Option<f64>,
    /// 95 % interval of the ratio.
    pub interval: Option<(f64, f64)>,
    /// True when the interval lies outside 1 ± tolerance.
    pub discontinuity: bool,
}

/// The live report (`GET /shadow/report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mirrored: u64,
    /// Copies not compared, by reason: queue_full, shadow_error, shadow_timeout.
    pub dropped: BTreeMap<String, u64>,
    /// Mirrored requests whose HTTP status differed between the sides.
    pub status_mismatches: u64,
    /// Requests the primary did not answer (the client got 502 primary_unavailable).
    #[serde(default)]
    pub primary_errors: u64,
    pub tolerance: f64,
    pub events: BTreeMap<String, EventReport>,
    /// All events by segment: `platform=ios`, `app_version=5.1.0`.
    pub segments: BTreeMap<String, EventReport>,
    /// Each event name by segment: `item_view platform=ios`, so a change confined to
    /// one event on one platform or version stands out.
    #[serde(default)]
    pub event_segments: BTreeMap<String, EventReport>,
    /// Event names and segments flagged as discontinuous.
    pub discontinuities: Vec<String>,
    /// Round-trip latency of each side, as the proxy saw it.
    pub latency: BTreeMap<String, Latency>,
}

/// Latency percentiles of one side, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Default)]
struct State {
    mirrored: u64,
    dropped: BTreeMap<String, u64>,
    status_mismatches: u64,
    primary_errors: u64,
    events: BTreeMap<String, Sides>,
    segments: BTreeMap<String, Sides>,
    event_segments: BTreeMap<String, Sides>,
    primary_latency: Option<hdrhistogram::Histogram<u64>>,
    shadow_latency: Option<hdrhistogram::Histogram<u64>>,
}

/// Accumulates the comparison; shared by the mirror workers and the report endpoint.
pub struct Comparison {
    tolerance: f64,
    state: Mutex<State>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    events: Vec<NamedEvent>,
}

#[derive(Deserialize)]
struct NamedEvent {
    #[serde(default)]
    event_name: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    app_version: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<AnswerResult>,
}

#[derive(Deserialize)]
struct AnswerResult {
    status: String,
}

impl Comparison {
    pub fn new(tolerance: f64) -> Comparison {
        Comparison {
            tolerance,
            state: Mutex::new(State::default()),
        }
    }

    /// Records one round trip of the primary (`shadow == false`) or the shadow.
    pub fn latency(&self, shadow: bool, took: std::time::Duration) {
        let mut state = self.state.lock().expect("comparison lock");
        let histogram = if shadow {
            &mut state.shadow_latency
        } else {
            &mut state.primary_latency
        };
        let histogram = histogram.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
        });
        let _ = histogram.record(took.as_micros().clamp(1, 600_000_000) as u64);
    }

    /// Counts a request the primary did not answer.
    pub fn primary_error(&self) {
        self.state.lock().expect("comparison lock").primary_errors += 1;
    }

    pub fn dropped(&self, reason: &str) {
        *self
            .state
            .lock()
            .expect("comparison lock")
            .dropped
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    /// Counts one mirrored request's outcomes on both sides.
    pub fn record(
        &self,
        request: &Bytes,
        primary_status: StatusCode,
        primary: &Bytes,
        shadow_status: StatusCode,
        shadow: &Bytes,
    ) {
        let events: Vec<NamedEvent> = serde_json::from_slice::<Envelope>(request)
            .map(|e| e.events)
            .unwrap_or_default();
        let outcomes = |body: &Bytes| -> Vec<String> {
            serde_json::from_slice::<Answer>(body)
                .map(|a| a.results.into_iter().map(|r| r.status).collect())
                .unwrap_or_default()
        };
        let (old, new) = (outcomes(primary), outcomes(shadow));
        let mut state = self.state.lock().expect("comparison lock");
        state.mirrored += 1;
        if primary_status != shadow_status {
            state.status_mismatches += 1;
        }
        for (i, event) in events.into_iter().enumerate() {
            let side = |list: &Vec<String>| list.get(i).cloned().unwrap_or_else(|| "none".into());
            let (o, n) = (side(&old), side(&new));
            let count = |sides: &mut Sides| {
                *sides.primary.entry(o.clone()).or_default() += 1;
                *sides.shadow.entry(n.clone()).or_default() += 1;
            };
            let name = event.event_name.unwrap_or_else(|| "(unnamed)".into());
            for (dimension, value) in [
                ("platform", &event.platform),
                ("app_version", &event.app_version),
            ] {
                if let Some(value) = value {
                    count(
                        state
                            .segments
                            .entry(format!("{dimension}={value}"))
                            .or_default(),
                    );
                    count(
                        state
                            .event_segments
                            .entry(format!("{name} {dimension}={value}"))
                            .or_default(),
                    );
                }
            }
            count(state.events.entry(name).or_default());
        }
    }

    pub fn report(&self) -> Report {
        let state = self.state.lock().expect("comparison lock");
        let mut discontinuities = Vec::new();
        let mut judge = |groups: &BTreeMap<String, Sides>| -> BTreeMap<String, EventReport> {
            groups
                .iter()
                .map(|(name, sides)| {
                    let report = self.judge(sides);
                    if report.discontinuity {
                        discontinuities.push(name.clone());
                    }
                    (name.clone(), report)
                })
                .collect()
        };
        let events = judge(&state.events);
        let segments = judge(&state.segments);
        let event_segments = judge(&state.event_segments);
        let summary = |h: &Option<hdrhistogram::Histogram<u64>>| {
            h.as_ref().map_or_else(Latency::default, |h| Latency {
                count: h.len(),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            })
        };
        let latency = [
            ("primary".to_owned(), summary(&state.primary_latency)),
            ("shadow".to_owned(), summary(&state.shadow_latency)),
        ]
        .into();
        Report {
            latency,
            mirrored: state.mirrored,
            dropped: state.dropped.clone(),
            status_mismatches: state.status_mismatches,
            primary_errors: state.primary_errors,
            tolerance: self.tolerance,
            events,
            segments,
            event_segments,
            discontinuities,
        }
    }

    fn judge(&self, sides: &Sides) -> EventReport {
        let old = sides.primary.get("accepted").copied().unwrap_or(0);
        let new = sides.shadow.get("accepted").copied().unwrap_or(0);
        let interval = ratio_interval(new, old);
        EventReport {
            outcomes: sides.clone(),
            ratio: (old > 0).then(|| new as f64 / old as f64),
            interval,
            discontinuity: interval
                .is_some_and(|(lo, hi)| hi < 1.0 - self.tolerance || lo > 1.0 + self.tolerance),
        }
    }
}

/// 95 % interval of new/old from the Wilson interval of p = new / (new + old).
pub fn ratio_interval(new: u64, old: u64) -> Option<(f64, f64)> {
    let n = (new + old) as f64;
    if n == 0.0 || old == 0 {
        return None;
    }
    let z = 1.96_f64;
    let p = new as f64 / n;
    let center = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    let (lo, hi) = ((center - half).max(0.0), (center + half).min(1.0));
    // JSON has no infinity: an unbounded upper end is reported as f64::MAX.
    let to_ratio = |q: f64| if q >= 1.0 { f64::MAX } else { q / (1.0 - q) };
    Some((to_ratio(lo), to_ratio(hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_halved_count_is_flagged_and_a_steady_one_is_not() {
        let c = Comparison::new(0.05);
        let request = Bytes::from(r#"{"events":[{"event_name":"a"},{"event_name":"b"}]}"#);
        let both = Bytes::from(r#"{"results":[{"status":"accepted"},{"status":"accepted"}]}"#);
        let only_a = Bytes::from(r#"{"results":[{"status":"accepted"},{"status":"rejected"}]}"#);
        for i in 0..400 {
            let shadow = if i % 2 == 0 { &both } else { &only_a };
            c.record(&request, StatusCode::OK, &both, StatusCode::OK, shadow);
        }
        let report = c.report();
        assert_eq!(report.mirrored, 400);
        assert_eq!(report.discontinuities, vec!["b".to_owned()]);
        assert_eq!(report.events["b"].ratio, Some(0.5));
        assert_eq!(
            report.events["b"].outcomes.shadow.get("rejected"),
            Some(&200)
        );
        assert!(!report.events["a"].discontinuity);
    }
}
