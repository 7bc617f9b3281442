//! The run's results: throughput, latency percentiles from an HDR histogram, HTTP
//! statuses and per-event outcomes; printed as a table and written as JSON.

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

/// What happened in one second of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub requests: u64,
    pub events: u64,
    /// Requests without a 2xx answer (refused write keys included).
    pub errors: u64,
    /// Slowest request finished in this second (µs).
    pub max_latency_us: u64,
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
    /// Per-second buckets of the run (requests, events, errors, slowest latency).
    #[serde(default)]
    pub series: Vec<Second>,
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
        }
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
        out
    }
}
