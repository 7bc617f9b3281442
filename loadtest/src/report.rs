//! The run's results: throughput, latency percentiles from an HDR histogram, HTTP
//! statuses and per-event outcomes, second by second, the launch gates and how they
//! fared; printed as a table and written as JSON (what `report` draws and `compare`
//! tests).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Counts of answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// HTTP status → requests (`0`: no answer, e.g. connection refused).
    pub statuses: BTreeMap<u16, u64>,
    /// Per-event outcome → events (`accepted`, `duplicate`, `rejected`, `retry`, `none`).
    pub events: BTreeMap<String, u64>,
}

impl Outcomes {
    pub fn count<'a>(&mut self, status: u16, events: impl Iterator<Item = &'a str>) {
        *self.statuses.entry(status).or_default() += 1;
        for outcome in events {
            *self.events.entry(outcome.to_owned()).or_default() += 1;
        }
    }
}

/// Latency percentiles in microseconds.
pub use tollgate_report::Latency;

/// What a run was: its id, where it sent, and its load model.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub run_id: String,
    /// The targets, comma-separated.
    pub target: String,
    /// `closed:<connections>`, `open:<rate>/s` or `ramp:<stages>`.
    pub model: String,
}

/// What happened in one second of the run (requests counted in the second they were
/// answered).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub requests: u64,
    pub events: u64,
    /// Requests without a 2xx answer (refused write keys included).
    pub errors: u64,
    /// Slowest request finished in this second (µs).
    pub max_latency_us: u64,
    /// Requests per second the load model asked for (open model and ramps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// HTTP status → requests.
    #[serde(default)]
    pub statuses: BTreeMap<u16, u64>,
    /// Per-event outcome → events.
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
    /// Latency percentiles of the requests answered in this second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// The collector's own view, scraped from its `/metrics` (see [`crate::scrape`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// Where a ramp stage ends, and the rate it reaches there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageMark {
    pub end_s: f64,
    pub rate: f64,
}

/// One point of the latency distribution, as HdrHistogram plots it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentile {
    /// 0–100.
    pub percentile: f64,
    pub latency_us: u64,
}

/// A launch gate that was set, and whether the run passed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// `max_p99`, `max_error_rate` or `min_throughput`.
    pub name: String,
    /// In the unit of `observed`: µs, a share, events/s.
    pub limit: f64,
    pub observed: f64,
    pub passed: bool,
}

impl Gate {
    /// (observed, limit) in the gate's unit: `4.20 ms`, `0.100%`, `5000 events/s`.
    pub fn figures(&self) -> (String, String) {
        let show = |v: f64| match self.name.as_str() {
            "max_p99" => format!("{:.2} ms", v / 1000.0),
            "max_error_rate" => format!("{:.3}%", v * 100.0),
            _ => format!("{v:.0} events/s"),
        };
        (show(self.observed), show(self.limit))
    }
}

/// The launch gates a run is held to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gates {
    pub max_p99: Option<Duration>,
    pub max_error_rate: Option<f64>,
    pub min_throughput: Option<f64>,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run_id: String,
    pub target: String,
    /// `closed:<connections>` or `open:<rate>/s`.
    pub model: String,
    pub seconds: f64,
    pub requests: u64,
    pub events: u64,
    pub requests_per_second: f64,
    pub events_per_second: f64,
    /// From each request's intended send time (open model) or actual send (closed).
    pub latency: Latency,
    pub outcomes: Outcomes,
    /// Requests without a 2xx answer, over all requests.
    pub error_rate: f64,
    /// Per-second buckets of the run.
    #[serde(default)]
    pub series: Vec<Second>,
    /// The traffic: same scenario and seed, same requests (what `compare` insists on).
    #[serde(default)]
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<crate::generate::Scenario>,
    /// Ramp stages, for the charts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageMark>,
    /// The whole run's latency distribution (percentile → µs), log-spaced towards the
    /// tail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribution: Vec<Percentile>,
    /// The launch gates that were set, and how the run fared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
}

impl Report {
    pub fn new(
        run: &RunInfo,
        elapsed: Duration,
        latency: &Histogram<u64>,
        outcomes: Outcomes,
    ) -> Report {
        let requests: u64 = outcomes.statuses.values().sum();
        let events: u64 = outcomes.events.values().sum();
        let failed: u64 = outcomes
            .statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(_, n)| n)
            .sum();
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Report {
            run_id: run.run_id.clone(),
            target: run.target.clone(),
            model: run.model.clone(),
            seconds,
            requests,
            events,
            requests_per_second: requests as f64 / seconds,
            events_per_second: events as f64 / seconds,
            latency: Latency::of(latency),
            outcomes,
            error_rate: if requests == 0 {
                0.0
            } else {
                failed as f64 / requests as f64
            },
            series: Vec::new(),
            seed: 0,
            scenario: None,
            stages: Vec::new(),
            distribution: distribution(latency),
            gates: Vec::new(),
        }
    }

    /// Holds the run to `gates`: records each one set, and returns whether all passed.
    pub fn judge(&mut self, gates: &Gates) -> bool {
        self.gates.clear();
        if let Some(max) = gates.max_p99 {
            let limit = max.as_micros() as f64;
            let observed = self.latency.p99_us as f64;
            self.gates.push(Gate {
                name: "max_p99".into(),
                limit,
                observed,
                passed: observed <= limit,
            });
        }
        if let Some(limit) = gates.max_error_rate {
            self.gates.push(Gate {
                name: "max_error_rate".into(),
                limit,
                observed: self.error_rate,
                passed: self.error_rate <= limit,
            });
        }
        if let Some(limit) = gates.min_throughput {
            self.gates.push(Gate {
                name: "min_throughput".into(),
                limit,
                observed: self.events_per_second,
                passed: self.events_per_second >= limit,
            });
        }
        self.gates.iter().all(|g| g.passed)
    }

    /// A table for people.
    pub fn human(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut out = format!(
            "run {} against {} ({}), {:.1} s\n\
             requests   {:>10}  {:>10.0}/s\n\
             events     {:>10}  {:>10.0}/s\n\
             latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n\
             errors     {:.3} %\n",
            self.run_id,
            self.target,
            self.model,
            self.seconds,
            self.requests,
            self.requests_per_second,
            self.events,
            self.events_per_second,
            ms(self.latency.p50_us),
            ms(self.latency.p90_us),
            ms(self.latency.p99_us),
            ms(self.latency.p999_us),
            ms(self.latency.max_us),
            self.error_rate * 100.0,
        );
        let statuses: Vec<String> = self
            .outcomes
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let events: Vec<String> = self
            .outcomes
            .events
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        out.push_str(&format!(
            "statuses   {}\noutcomes   {}\n",
            statuses.join("  "),
            events.join("  ")
        ));
        for gate in &self.gates {
            let (observed, limit) = gate.figures();
            out.push_str(&format!(
                "gate       {} {}: {observed} (limit {limit})\n",
                gate.name,
                if gate.passed { "passed" } else { "MISSED" }
            ));
        }
        out
    }
}

/// The distribution at log-spaced percentiles (four per halving of what remains: 0, …,
/// 50, …, 75, …, 87.5, … towards 100), as HdrHistogram's percentile plots take them,
/// ending at the maximum.
pub fn distribution(histogram: &Histogram<u64>) -> Vec<Percentile> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Percentile> = (0..)
        .map(|quarter_halvings| 1.0 - 0.5f64.powf(f64::from(quarter_halvings) / 4.0))
        .take_while(|q| *q < 1.0 && (1.0 - q) * histogram.len() as f64 >= 0.5)
        .map(|q| Percentile {
            percentile: q * 100.0,
            latency_us: histogram.value_at_quantile(q),
        })
        .collect();
    out.push(Percentile {
        percentile: 100.0,
        latency_us: histogram.max(),
    });
    out
}
