//! `tollgate-loadtest`: realistic SDK traffic against a collector, and a
//! reconciliation proving that nothing acknowledged was lost or counted twice.
//!
//! # Layout
//! - [`generate`]: seeded batches with SDK retries, late events, skewed clocks and
//!   invalid events;
//! - [`run`]: closed and open load models over a pooled HTTP client, the manifest;
//! - [`report`]: throughput, latency percentiles (HDR histogram), outcomes, second by
//!   second, and the launch gates;
//! - [`scrape`]: the collector's `/metrics` during a run, a few series per second;
//! - [`verify`]: manifest against the collector's log and quarantine, read through
//!   `tollgate-log` (segment files or Kafka topics);
//! - [`page`]: the launch report, one self-contained HTML page;
//! - [`compare`]: two runs of one scenario, metric by metric, with confidence
//!   intervals from their per-second samples.

pub mod compare;
pub mod generate;
pub mod page;
pub mod report;
pub mod run;
pub mod scrape;
pub mod verify;
