//! `[time]`: how event time is judged against server time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How event time is judged against server time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// Events whose skew-corrected time is older than this are stamped `arrival: late`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Events ahead of the server by more than this are stamped `arrival: future`.
    #[serde(with = "humantime_serde")]
    pub future_tolerance: Duration,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            allowed_lateness: Duration::from_secs(24 * 3600),
            future_tolerance: Duration::from_secs(5 * 60),
        }
    }
}
