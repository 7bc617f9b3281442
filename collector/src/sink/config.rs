//! `[log]` and `[log.kafka]`: where records go, and how the log batches and syncs them.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// The local durable log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Data directory: accepted events go to `events/`, rejected ones to `quarantine/`.
    pub data_dir: PathBuf,
    /// File sink: requests copied here by a shadow proxy (`X-Tollgate-Shadow: 1`) are
    /// logged under this directory instead, apart from real traffic (the Kafka sink has
    /// `log.kafka.shadow_topic`). Unset: logged with everything else, counted apart.
    #[serde(default)]
    pub shadow_data_dir: Option<PathBuf>,
    /// A segment file is closed and a new one started past this size.
    pub segment_max_bytes: ByteSize,
    /// A segment file is closed and a new one started at the first write past this age.
    #[serde(with = "humantime_serde")]
    pub segment_max_age: Duration,
    /// Requests waiting for the log writer; when full, requests get 503 + Retry-After.
    pub queue_capacity: NonZeroUsize,
    /// Most bytes one group commit (one fsync) covers.
    pub max_group_bytes: ByteSize,
    /// The longest the writer waits for a group commit (one fsync) to fill: it waits
    /// only when the arrival rate brings a whole group of ten requests within this, so
    /// busy logs get fewer fsyncs and quiet or moderate ones no added latency; `0s`
    /// never waits.
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
    /// File sink: drop what each group commit wrote from the page cache once it is
    /// synced. The collector never reads its log back; `false` keeps the pages for a
    /// reader that follows the files within seconds (a shipper tailing them).
    pub drop_page_cache: bool,
    /// Where records go: `file` (the local log above) or `kafka` (see `[log.kafka]`).
    pub sink: SinkKind,
    /// Settings of the `kafka` sink.
    pub kafka: KafkaConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            data_dir: PathBuf::from("data"),
            shadow_data_dir: None,
            segment_max_bytes: ByteSize::mib(128),
            segment_max_age: Duration::from_secs(3600),
            queue_capacity: NonZeroUsize::new(1024).unwrap(),
            max_group_bytes: ByteSize::mib(8),
            commit_delay: Duration::from_millis(2),
            drop_page_cache: true,
            sink: SinkKind::File,
            kafka: KafkaConfig::default(),
        }
    }
}

/// Which log the collector appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Local NDJSON segment files under `data_dir`, fsynced: one machine.
    File,
    /// A Kafka-compatible broker, acknowledged with `acks=all`: many collectors.
    Kafka,
}

/// The Kafka sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic of accepted events.
    pub topic: String,
    /// Topic of rejected events, with their reason.
    pub quarantine_topic: String,
    /// Topic for requests from a shadow proxy (`X-Tollgate-Shadow: 1`), accepted and
    /// rejected alike; unset: the same topics as other traffic.
    pub shadow_topic: Option<String>,
    /// Field that keys each message, so one user's events stay in order in one
    /// partition: `user_id` (falls back to `device_id`), `device_id`, `session_id`,
    /// `event_id`.
    pub key: super::PartitionKey,
    /// How produce batches are compressed.
    pub compression: Compression,
    /// How long the producer waits to fill a batch (`linger.ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Most bytes in one produce batch (`batch.size`).
    pub batch_size: ByteSize,
    /// Messages queued or in flight before requests get 503 at once
    /// (`queue.buffering.max.messages`).
    pub queue_max_messages: NonZeroUsize,
    /// How long one message may take to be acknowledged, retries included
    /// (`message.timeout.ms`); past it the request gets 503.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Further librdkafka properties, e.g. `"security.protocol" = "SASL_SSL"`.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "tollgate.events".into(),
            quarantine_topic: "tollgate.quarantine".into(),
            shadow_topic: None,
            key: crate::sink::PartitionKey::UserId,
            compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            batch_size: ByteSize::mib(1),
            queue_max_messages: NonZeroUsize::new(100_000).unwrap(),
            delivery_timeout: Duration::from_secs(5),
            properties: Default::default(),
        }
    }
}

/// Compression of Kafka produce batches (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The librdkafka name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl LogConfig {
    pub(crate) fn check(&self, problems: &mut Problems) {
        if self.sink == SinkKind::Kafka {
            let k = &self.kafka;
            if k.brokers.trim().is_empty() {
                problems.add("log.kafka.brokers", "give at least one host:port");
            }
            if k.topic.is_empty() || k.quarantine_topic.is_empty() {
                problems.add("log.kafka.topic", "topics must not be empty");
            }
        }
    }
}
