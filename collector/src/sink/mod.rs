//! The durable log: where accepted and quarantined events go.
//!
//! Enters: one [`AppendBatch`] per request, already serialised as NDJSON. Leaves: `Ok`
//! only once every byte of it is durable (written and fsynced for the local log), which
//! is what lets the collector acknowledge. The queue in front of the log is bounded:
//! when it is full, [`LogError::QueueFull`] and the client gets 503 rather than the
//! collector buffering without limit.

mod file;

pub use file::{FileLog, FileLogOptions, segments};

use std::sync::Arc;

use async_trait::async_trait;

/// The NDJSON lines of one request, for the two streams of the log.
#[derive(Debug, Default)]
pub struct AppendBatch {
    /// Accepted records, one JSON object per line, each ending with `\n`.
    pub events: Vec<u8>,
    /// Quarantined (rejected) records, same format.
    pub quarantine: Vec<u8>,
}

impl AppendBatch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.quarantine.is_empty()
    }

    pub fn len(&self) -> usize {
        self.events.len() + self.quarantine.len()
    }
}

/// Why an append is not durable. Nothing of a failed append is acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The writer's queue is full: the client should retry shortly.
    #[error("the log queue is full")]
    QueueFull,
    /// The log is shutting down or its writer stopped.
    #[error("the log is closed")]
    Closed,
    /// Writing or syncing failed (disk full, I/O error). The partial write was undone.
    #[error("writing the log failed: {0}")]
    Io(#[source] Arc<std::io::Error>),
}

impl LogError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            LogError::QueueFull => "queue_full",
            LogError::Closed => "closed",
            LogError::Io(_) => "io",
        }
    }
}

/// An append-only, durable event log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends a request's records; resolves once they are durable.
    ///
    /// # Errors
    /// See [`LogError`]; on error nothing of the batch may be considered written.
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError>;

    /// Whether appends are expected to succeed right now (for `/readyz`).
    fn ready(&self) -> bool;

    /// Stops accepting appends, finishes the queued ones and syncs.
    async fn close(&self);
}
