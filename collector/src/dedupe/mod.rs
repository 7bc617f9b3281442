//! Idempotency: retries and double sends never inflate counts.
//!
//! Enters: the keys (`<source>:<event_id>`) of a request's valid events. Leaves: one
//! [`ClaimOutcome`] per key. The protocol is claim → write → commit (or release when
//! the write failed), so that a claimed event whose write failed is accepted on retry:
//! 1. [`IdempotencyStore::claim`] marks every key `pending:<token>` unless it is
//!    already there (`done` → duplicate, someone else's pending → retry);
//! 2. the caller writes the claimed events to the log;
//! 3. [`IdempotencyStore::commit`] marks them `done` for the dedupe window, or
//!    [`IdempotencyStore::release`] deletes the claims that are still ours.
//!
//! Each call covers a whole request (one round trip for a remote store). A crash
//! between write and commit leaves claims that expire after the claim TTL; a retry
//! after that is logged again, so the log is at-least-once within that window.

pub mod config;
mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore, RedisTarget};

use async_trait::async_trait;

/// What a claim found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free and is now ours: write the event.
    Claimed = 0,
    /// The key was committed within the window: the event is a duplicate.
    Duplicate = 1,
    /// Another request holds a live claim: it is being written right now; retry later.
    InFlight = 2,
}

/// The store could not answer; the failure policy decides what happens.
#[derive(Debug, thiserror::Error)]
#[error("idempotency store {operation} failed: {source}")]
pub struct StoreError {
    pub operation: &'static str,
    #[source]
    pub source: StoreFailure,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// No answer within the command timeout: the operation may have been applied all
    /// the same (a claim may hold the keys for the claim TTL).
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The store answered with an error, or the connection failed.
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    /// The store answered something this protocol does not expect.
    #[error("unexpected reply: {0}")]
    Reply(String),
    /// A reply of the wrong type.
    #[error(transparent)]
    Parse(#[from] ::redis::ParsingError),
}

impl StoreError {
    pub fn new(operation: &'static str, source: impl Into<StoreFailure>) -> StoreError {
        StoreError {
            operation,
            source: source.into(),
        }
    }

    /// The store did not answer in time, so the operation may have been applied.
    pub fn timed_out(&self) -> bool {
        matches!(self.source, StoreFailure::TimedOut(_))
    }
}

/// The configured store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("idempotency.redis.tls_ca_file: {}: {source}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("idempotency.redis: {0}")]
    Redis(#[from] ::redis::RedisError),
}

/// The store `[idempotency]` configures.
///
/// # Errors
/// A Redis URL the client refuses, or a CA file that cannot be read.
pub fn open(
    config: &config::IdempotencyConfig,
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
) -> Result<std::sync::Arc<dyn IdempotencyStore>, OpenError> {
    Ok(match config.backend {
        config::IdempotencyBackend::Memory => std::sync::Arc::new(MemoryStore::new(
            config.max_keys.get(),
            config.claim_ttl,
            config.dedupe_window,
            metrics,
        )),
        config::IdempotencyBackend::Redis => {
            std::sync::Arc::new(RedisStore::new(RedisOptions::from_config(config)?)?)
        }
    })
}

/// A shared memory of which events were already logged.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims every key for `token` (unique per request) in one call.
    ///
    /// # Errors
    /// The store is unreachable or timed out.
    async fn claim(&self, keys: &[String], token: &str) -> Result<Vec<ClaimOutcome>, StoreError>;

    /// Marks written keys `done` for the dedupe window.
    ///
    /// # Errors
    /// The store is unreachable; the events are logged regardless, and their claims
    /// expire after the claim TTL.
    async fn commit(&self, keys: &[String], token: &str) -> Result<(), StoreError>;

    /// Deletes the claims still held by `token` (never someone else's).
    ///
    /// # Errors
    /// The store is unreachable; the claims then expire after the claim TTL.
    async fn release(&self, keys: &[String], token: &str) -> Result<(), StoreError>;

    /// The answer stored under a request-level `Idempotency-Key`, if any.
    ///
    /// # Errors
    /// The store is unreachable; the request is then processed (event-level
    /// deduplication still applies).
    async fn recall(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores the answer to a request-level `Idempotency-Key` for `ttl`, unless one is
    /// stored already (the first answer wins).
    ///
    /// # Errors
    /// The store is unreachable; a replay is then processed again (and its events
    /// answered `duplicate`).
    async fn remember(
        &self,
        key: &str,
        answer: &[u8],
        ttl: std::time::Duration,
    ) -> Result<(), StoreError>;

    /// Whether the store answers right now (for `/readyz`).
    async fn ready(&self) -> bool;

    /// Short name for logs and `/readyz`.
    fn name(&self) -> &'static str;

    /// Whether a call waits for another process (a network round trip), rather than
    /// being done in place: the pipeline then answers a request without waiting for
    /// its commit.
    fn is_remote(&self) -> bool {
        false
    }
}
