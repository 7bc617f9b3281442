//! `[telemetry]`: metrics labels and trace export.

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// Metrics labels and trace export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Per-event data-quality metrics (segments, missing fields, lateness, skew);
    /// `false` keeps only the request-level metrics.
    pub data_quality: bool,
    /// App versions with their own label in the data-quality metrics (the most frequent
    /// of the last minute); the rest are `other`.
    pub app_version_labels: usize,
    /// OTLP/HTTP endpoint traces are exported to (e.g. `http://otel-collector:4318`);
    /// unset: no trace export.
    pub otlp_endpoint: Option<String>,
    /// Share of requests traced when exporting (0 to 1).
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            data_quality: true,
            app_version_labels: 20,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            problems.add("telemetry.trace_sample_ratio", "must be between 0 and 1");
        }
    }
}
