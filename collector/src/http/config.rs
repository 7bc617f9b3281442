//! `[server]` and `[limits]`: the listeners, the request path around the handlers,
//! and the size limits on what clients send.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::config::{Problems, nets};

/// The HTTP listeners and the request path around the handlers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public ingest listener (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`); keep it private.
    pub admin_listen: Option<SocketAddr>,
    /// Longest a request may take, body upload included, before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests processed at once; beyond this the collector sheds load with 503.
    pub max_concurrent_requests: NonZeroUsize,
    /// On SIGTERM, how long in-flight requests may take to finish before the log is
    /// flushed and the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Serve the public listener over TLS (HTTP/2 and HTTP/1.1 by ALPN). Unset: plain
    /// HTTP, for local use or behind a TLS-terminating load balancer.
    pub tls: Option<TlsConfig>,
    /// Load balancers and proxies (CIDR or address) whose `X-Forwarded-For` names the
    /// client, for per-IP rate limits. Anyone else's header is ignored.
    #[serde(with = "nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Most client IPs tracked by per-IP rate limits; entries back to a full budget
    /// are pruned, and past this new addresses are not limited per IP until there is
    /// room (the source's own limits still apply).
    pub max_tracked_ips: NonZeroUsize,
    /// Longest a client may take to send a request's headers before its connection is
    /// closed (slow-header attacks).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves in either direction for this long (an idle
    /// keep-alive connection, a client that stopped reading its answer) is closed.
    /// Must exceed `request_timeout`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most connections open at once on each listener; past this, new connections
    /// wait in the kernel's accept backlog.
    pub max_connections: NonZeroUsize,
    /// Shadow proxies (CIDR or address) whose `X-Tollgate-Shadow: 1` is believed: their
    /// copies are logged to the shadow stream. Anyone else's header is ignored (the
    /// events are logged as real traffic). Default: nobody, loopback included.
    #[serde(with = "nets")]
    pub shadow_proxies: Vec<ipnet::IpNet>,
    /// Serve the embedded `dev` source (write key `dev`, unregistered events accepted)
    /// on a non-loopback address. Off: the collector refuses to start that way.
    pub expose_dev_source: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: NonZeroUsize::new(2048).unwrap(),
            shutdown_timeout: Duration::from_secs(25),
            tls: None,
            trusted_proxies: Vec::new(),
            max_tracked_ips: NonZeroUsize::new(100_000).unwrap(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: NonZeroUsize::new(10_000).unwrap(),
            shadow_proxies: Vec::new(),
            expose_dev_source: false,
        }
    }
}

/// TLS on the public listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the files are checked for a renewed certificate (SIGHUP reloads at
    /// once). Open connections are never dropped by a reload.
    #[serde(with = "humantime_serde", default = "default_tls_reload")]
    pub reload_interval: Duration,
}

fn default_tls_reload() -> Duration {
    Duration::from_secs(10)
}

/// Size limits on what clients send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body on the wire (compressed size when gzipped). Larger: 413.
    pub max_body: ByteSize,
    /// Largest body after gzip decompression. Larger: 413.
    pub max_decompressed: ByteSize,
    /// Largest decompressed/compressed ratio accepted (gzip bombs get 413).
    pub max_gzip_ratio: NonZeroU32,
    /// Largest single event (its JSON text). Larger: that event is rejected.
    pub max_event: ByteSize,
    /// Most events in one request. More: 413.
    pub max_events_per_batch: NonZeroUsize,
    /// Bytes all requests in flight may hold at once: each reserves its body on the
    /// wire (or `max_body` when the length is not declared), then twice its
    /// decompressed size (the decoded events and the records waiting for the log).
    /// Past it a request gets 503 `memory_budget_exceeded` with `Retry-After`, so
    /// memory stays bounded under any load instead of the process being killed.
    pub max_in_flight_bytes: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body: ByteSize::mib(1),
            max_decompressed: ByteSize::mib(4),
            max_gzip_ratio: NonZeroU32::new(200).unwrap(),
            max_event: ByteSize::kib(32),
            max_events_per_batch: NonZeroUsize::new(1000).unwrap(),
            max_in_flight_bytes: ByteSize::gib(1),
        }
    }
}

impl ServerConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.request_timeout.is_zero() {
            problems.add("server.request_timeout", "must be more than 0s");
        }
        if self.idle_timeout <= self.request_timeout {
            problems.add(
                "server.idle_timeout",
                "must be longer than server.request_timeout, or a slow request's connection is cut while it is processed",
            );
        }
        if self.header_read_timeout.is_zero() {
            problems.add("server.header_read_timeout", "must be more than 0s");
        }
        if self.listen.port() != 0 && Some(self.listen) == self.admin_listen {
            problems.add("server.admin_listen", "must differ from server.listen");
        }
    }
}

impl LimitsConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.max_event > self.max_decompressed {
            problems.add(
                "limits.max_event",
                "must not exceed limits.max_decompressed",
            );
        }
        if self.max_in_flight_bytes.as_u64()
            < self.max_body.as_u64() + 2 * self.max_decompressed.as_u64()
        {
            problems.add(
                "limits.max_in_flight_bytes",
                "must hold at least one largest request: max_body + 2 × max_decompressed",
            );
        }
        if self.max_in_flight_bytes.as_u64() > (u64::from(u32::MAX) << 10) {
            problems.add("limits.max_in_flight_bytes", "must be at most 4 TiB");
        }
        if self.max_body > self.max_decompressed {
            problems.add("limits.max_body", "must not exceed limits.max_decompressed");
        }
    }
}
