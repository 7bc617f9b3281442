//! The proxy's settings at run time (the file and flags that set them are
//! [`crate::file`]).

use std::time::Duration;

use super::ShadowPriority;
use crate::{compare, mapping};

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The collector whose answers clients receive (`http://host:port`).
    pub primary: String,
    /// The collector that receives copies; `None` mirrors nothing.
    pub shadow: Option<String>,
    /// A second replica of the primary's version that receives the same copies: old vs
    /// old is the noise floor new vs old must exceed to be flagged (A/A).
    pub replica: Option<String>,
    /// Renames, splits and merges between old and new event names.
    pub mapping: mapping::Mapping,
    /// Copies waiting for the shadow; when full, new copies are dropped. With a
    /// `sample_rate` below 1 the shadow thread decides sampling (it parses the body), so
    /// unsampled copies pass through this queue too, briefly.
    pub queue: usize,
    /// Bytes of bodies waiting for the shadow; past this, new copies are dropped too
    /// (so large bodies cannot make a count-bounded queue hold gigabytes).
    pub queue_bytes: usize,
    /// Copies in flight to the shadow at once.
    pub shadow_concurrency: usize,
    /// Longest the shadow may take for one copy.
    pub shadow_timeout: Duration,
    /// Largest body copied to the shadow; a larger one still reaches the primary whole
    /// (the collector's own limit is the real one), only its copy is dropped.
    pub max_body: usize,
    /// A discontinuity is a bridge-ratio interval that excludes 1 ± this.
    pub tolerance: f64,
    /// Share of traffic mirrored, chosen by a stable hash of `sample_key`.
    pub sample_rate: f64,
    /// The event field whose hash decides sampling (`user_id`, `device_id` or
    /// `event_id`), read from a request's first event: a sampled user is mirrored whole.
    pub sample_key: String,
    /// Serve clients over TLS with this certificate (reloaded on SIGHUP or change).
    pub tls: Option<tollgate_edge::TlsFiles>,
    /// CPU priority of the shadow thread (copying, sending, comparing).
    pub shadow_priority: ShadowPriority,
    /// Most rows per comparison table (events, segments, event × segment): their keys
    /// come from clients, so past this new keys are counted under `other`.
    pub max_rows: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// A client connection on which nothing moves for this long is closed.
    pub idle_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            primary: "http://127.0.0.1:8080".into(),
            shadow: None,
            replica: None,
            mapping: mapping::Mapping::default(),
            queue: 10_000,
            queue_bytes: 256 << 20,
            shadow_concurrency: 64,
            shadow_timeout: Duration::from_secs(2),
            max_body: 4 << 20,
            tolerance: 0.05,
            sample_rate: 1.0,
            sample_key: "user_id".into(),
            tls: None,
            shadow_priority: ShadowPriority::Idle,
            max_rows: compare::DEFAULT_MAX_ROWS,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}
