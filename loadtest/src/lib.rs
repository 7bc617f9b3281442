//! `tollgate-loadtest`: realistic SDK traffic against a collector, and a
//! reconciliation proving that nothing acknowledged was lost or counted twice.
//!
//! # Layout
//! - [`generate`]: seeded batches with SDK retries, late events, skewed clocks and
//!   invalid events;
//! - [`run`]: closed and open load models over a pooled HTTP client, the manifest;
//! - [`report`]: throughput, latency percentiles (HDR histogram), outcomes;
//! - [`verify`]: manifest against the collector's log and quarantine, read through
//!   `tollgate-log` (segment files or Kafka topics).

pub mod generate;
pub mod report;
pub mod run;
pub mod verify;
