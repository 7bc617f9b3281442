//! `[idempotency]` and `[idempotency.redis]`: which store remembers event ids, for how
//! long, and what happens when it cannot answer.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// What happens when the idempotency store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Accept the events, stamp them `dedupe: unchecked` and count them.
    FailOpen,
    /// Answer 503 with Retry-After; the client retries later.
    FailClosed,
}

/// Which idempotency store backs the claim/commit protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdempotencyBackend {
    /// In-process, bounded: right for one collector; replicas do not share it.
    Memory,
    /// Redis (or Redis Cluster), shared by every replica: see `[idempotency.redis]`.
    Redis,
}

/// The shared Redis store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB`, `rediss://…` (TLS) or `redis+unix:///path/redis.sock`.
    pub url: String,
    /// Redis Cluster seed nodes (`redis://HOST:PORT`); when set, `url` is not used.
    pub cluster_nodes: Vec<String>,
    /// PEM file of the CA that signed the Redis server's certificate, for `rediss://`
    /// with a private CA (else the system's roots are used).
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key: `<prefix>:<source>:<event_id>`.
    pub key_prefix: String,
    /// Longest wait to (re)connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for one round trip; past it the failure policy applies.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            tls_ca_file: None,
            key_prefix: "tollgate".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(250),
        }
    }
}

/// Idempotency: `event_id`s seen within the window are answered `duplicate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    pub backend: IdempotencyBackend,
    /// How long an accepted `event_id` is remembered.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// How long a claim lives while its events are being written; bounds how long a
    /// crashed writer blocks a retry.
    #[serde(with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// Memory backend: most keys kept (≈ 40 bytes each). Past it the least recently
    /// used are forgotten early (counted in `tollgate_idempotency_evictions_total`).
    pub max_keys: NonZeroU64,
    /// What to do when the store cannot answer.
    pub on_store_error: FailurePolicy,
    /// Settings of the `redis` backend.
    pub redis: RedisConfig,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            backend: IdempotencyBackend::Memory,
            dedupe_window: Duration::from_secs(24 * 3600),
            claim_ttl: Duration::from_secs(60),
            max_keys: NonZeroU64::new(2_000_000).unwrap(),
            on_store_error: FailurePolicy::FailClosed,
            redis: RedisConfig::default(),
        }
    }
}

impl IdempotencyConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.claim_ttl >= self.dedupe_window {
            problems.add(
                "idempotency.claim_ttl",
                "must be shorter than idempotency.dedupe_window",
            );
        }
        if self.backend == IdempotencyBackend::Redis {
            self.redis.check(problems);
        }
    }
}

impl RedisConfig {
    /// The URLs connected to: the cluster's seed nodes, else `url`.
    pub(crate) fn urls(&self) -> Vec<&str> {
        if self.cluster_nodes.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.cluster_nodes.iter().map(String::as_str).collect()
        }
    }

    fn check(&self, problems: &mut Problems) {
        for url in self.urls() {
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
                problems.add("idempotency.redis.url", format!("{url:?}: {e}"));
            }
        }
        if let Some(ca) = &self.tls_ca_file
            && !ca.is_file()
        {
            problems.add(
                "idempotency.redis.tls_ca_file",
                format!("{} is not a file", ca.display()),
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            problems.add(
                "idempotency.redis.key_prefix",
                "must be non-empty, without spaces",
            );
        }
    }
}
