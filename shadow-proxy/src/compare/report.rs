//! What the comparison reports: outcome counts per row and side, bridge ratios with
//! their intervals, the A/A noise, and each side's latency. Rendered as JSON (serde),
//! Prometheus text and HTML ([`super::render`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Outcome counts of one row on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sides {
    pub primary: BTreeMap<String, u64>,
    pub shadow: BTreeMap<String, u64>,
    /// The second primary replica (A/A), when one is configured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replica: BTreeMap<String, u64>,
}

impl Sides {
    pub(super) fn accepted(side: &BTreeMap<String, u64>) -> u64 {
        side.get("accepted").copied().unwrap_or(0)
    }
}

/// Old vs old: how far the old logging differs from itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    /// replica accepted / primary accepted.
    pub ratio: Option<f64>,
    pub interval: Option<(f64, f64)>,
}

/// One row of the report: an event name, a segment, or a bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    pub outcomes: Sides,
    /// shadow accepted / primary accepted (for a bridge: Σ new / Σ old).
    pub ratio: Option<f64>,
    /// 95 % interval of the ratio.
    pub interval: Option<(f64, f64)>,
    /// The ratio the row should have: 1, or a bridge's expected ratio.
    #[serde(default = "one")]
    pub expected: f64,
    /// The A/A comparison of the same row, when a replica is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<Noise>,
    /// The interval is outside expected × (1 ± tolerance) but old-vs-old shows as much.
    #[serde(default)]
    pub within_noise: bool,
    /// A name covered by a bridge: judged there, not here.
    #[serde(default)]
    pub mapped: bool,
    /// True when the interval lies outside expected × (1 ± tolerance) and beyond the noise.
    pub discontinuity: bool,
}

fn one() -> f64 {
    1.0
}

/// The live report (`GET /shadow/report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mirrored: u64,
    /// Copies not compared, by reason: queue_full, too_large, incomplete, shadow_error,
    /// shadow_timeout (and replica_error, replica_timeout).
    pub dropped: BTreeMap<String, u64>,
    /// Mirrored requests whose HTTP status differed between the sides.
    pub status_mismatches: u64,
    /// Requests the primary did not answer (the client got 502 primary_unavailable).
    #[serde(default)]
    pub primary_errors: u64,
    pub tolerance: f64,
    pub events: BTreeMap<String, EventReport>,
    /// All events a bridge does not cover, by segment: `platform=ios`,
    /// `app_version=5.1.0`, `region=eu`, `source=web`.
    pub segments: BTreeMap<String, EventReport>,
    /// Each event name by segment: `item_view platform=ios`, so a change confined to
    /// one event on one platform or version stands out.
    #[serde(default)]
    pub event_segments: BTreeMap<String, EventReport>,
    /// Renames, splits and merges: `label` in total and `label platform=ios` per segment.
    #[serde(default)]
    pub bridges: BTreeMap<String, EventReport>,
    /// Rows flagged as discontinuous.
    pub discontinuities: Vec<String>,
    /// Round-trip latency of each side, as the proxy saw it.
    pub latency: BTreeMap<String, Latency>,
}

/// Latency percentiles of one side, in microseconds.
pub use tollgate_report::Latency;
