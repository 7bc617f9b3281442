//! The durable log: where accepted and quarantined events go.
//!
//! Enters: one [`AppendBatch`] per request, already serialised as NDJSON. Leaves: `Ok`
//! only once every byte of it is durable (written and fsynced for the local log), which
//! is what lets the collector acknowledge. The queue in front of the log is bounded:
//! when it is full, [`LogError::QueueFull`] and the client gets 503 rather than the
//! collector buffering without limit.

pub mod config;
mod file;
mod kafka;

pub use config::{Compression, KafkaConfig, LogConfig, SinkKind};
pub use file::FileLog;
pub use kafka::{KafkaLog, OpenError as KafkaOpenError};
/// Reading the segment files back (tests, tools): one reader, in `tollgate-log`.
pub use tollgate_log::segments;

use std::sync::Arc;

use async_trait::async_trait;

/// The NDJSON lines of one request, for the two streams of the log.
#[derive(Debug, Default)]
pub struct AppendBatch {
    /// Accepted records, one JSON object per line, each ending with `\n`.
    pub events: Vec<u8>,
    /// Quarantined (rejected) records, same format.
    pub quarantine: Vec<u8>,
    /// Per-record routing facts, one per line of `events` and then of `quarantine`,
    /// filled only for a log that asks for them ([`EventLog::record_meta`]).
    pub meta: Option<BatchMeta>,
    /// The request came from a shadow proxy (`X-Tollgate-Shadow: 1`).
    pub shadow: bool,
}

/// What a message-oriented log needs to route records without parsing them.
#[derive(Debug, Default)]
pub struct BatchMeta {
    /// The source (write key's owner) of the whole request.
    pub source: String,
    /// One per accepted record, in order.
    pub events: Vec<RecordMeta>,
    /// One per quarantined record, in order.
    pub quarantine: Vec<RecordMeta>,
}

/// One record's routing facts.
#[derive(Debug, Default, Clone)]
pub struct RecordMeta {
    /// Offset just past the record's `\n` in its stream's bytes.
    pub end: usize,
    /// Partition key (see [`PartitionKey`]); `None` lets the log spread records.
    pub key: Option<String>,
    pub event_name: Option<String>,
    pub schema_version: Option<u32>,
    pub region: Option<String>,
    /// Why a quarantined record was rejected.
    pub error_code: Option<&'static str>,
}

/// Which event field keys a record, so that one user's events stay in order in one
/// partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKey {
    /// `user_id`, else `device_id` (anonymous users), else none.
    UserId,
    DeviceId,
    SessionId,
    EventId,
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
    /// A broker did not acknowledge some records. Those marked `true` in
    /// `delivered_events` (by position among the batch's accepted records) are durable
    /// all the same: their idempotency claims are committed so that the client's retry
    /// logs only the rest.
    #[error("the broker did not acknowledge every record: {reason}")]
    Delivery {
        delivered_events: Arc<[bool]>,
        /// The librdkafka error, as a metric label (e.g. `MessageTimedOut`).
        kind: &'static str,
        reason: String,
    },
}

impl LogError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            LogError::QueueFull => "queue_full",
            LogError::Closed => "closed",
            LogError::Io(_) => "io",
            LogError::Delivery { kind, .. } => kind,
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

    /// The partition key a message-oriented log wants, which makes the pipeline fill
    /// [`AppendBatch::meta`]; `None` (the default) for the local log, which needs none.
    fn record_meta(&self) -> Option<PartitionKey> {
        None
    }

    /// Stops accepting appends, finishes the queued ones and syncs.
    async fn close(&self);
}

/// Routes requests from a shadow proxy to a log of their own (the file sink's
/// `log.shadow_data_dir`), so copies never mix with real traffic.
pub struct ShadowApart {
    pub main: Arc<dyn EventLog>,
    pub shadow: Arc<dyn EventLog>,
}

#[async_trait]
impl EventLog for ShadowApart {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        if batch.shadow {
            self.shadow.append(batch).await
        } else {
            self.main.append(batch).await
        }
    }

    fn ready(&self) -> bool {
        self.main.ready() && self.shadow.ready()
    }

    fn record_meta(&self) -> Option<PartitionKey> {
        self.main.record_meta()
    }

    async fn close(&self) {
        self.main.close().await;
        self.shadow.close().await;
    }
}
