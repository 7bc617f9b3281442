//! The log on a Kafka-compatible broker, for collectors that scale out.
//!
//! Each record is one message: the same JSON line as the local log (without the `\n`),
//! keyed by a configured field so that a user's events stay in order in one partition,
//! with headers (`event_name`, `schema_version`, `source`, `region`; `error_code` on
//! quarantine) so consumers can route without parsing. The producer is idempotent with
//! `acks=all`; a request is answered only once the broker acknowledged every one of its
//! records. librdkafka's own queue is bounded: when it is full, the append fails with
//! [`LogError::QueueFull`] at once instead of waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry::KeyValue;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;

use super::{AppendBatch, EventLog, KafkaConfig, LogError, PartitionKey, RecordMeta};
use crate::telemetry::Metrics;

/// The Kafka log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A librdkafka setting (`[log.kafka]`, or one of its `properties`) was refused.
    #[error("creating the Kafka producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("starting the Kafka probe thread: {0}")]
    Probe(#[source] std::io::Error),
}

/// Receives librdkafka's statistics and errors.
struct Context {
    metrics: Arc<Metrics>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        for broker in statistics.brokers.values() {
            if let Some(rtt) = &broker.rtt {
                // librdkafka reports microseconds.
                self.metrics.kafka_broker_rtt.record(
                    rtt.avg as f64 / 1e6,
                    &[KeyValue::new("broker", broker.name.clone())],
                );
            }
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
                tracing::error!(facility = fac, "librdkafka: {log_message}")
            }
            Level::Warning => tracing::warn!(facility = fac, "librdkafka: {log_message}"),
            Level::Notice | Level::Info => {
                tracing::info!(facility = fac, "librdkafka: {log_message}")
            }
            Level::Debug => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

/// The Kafka log.
pub struct KafkaLog {
    /// The current producer and its generation; replaced when the broker no longer
    /// accepts its identity (see [`needs_new_producer`]).
    producer: Arc<RwLock<(u64, FutureProducer<Context>)>>,
    options: KafkaConfig,
    closed: AtomicBool,
    /// Set by the probe thread: the broker answers and the topic has partitions.
    reachable: Arc<AtomicBool>,
    stop_probe: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl KafkaLog {
    /// Creates the producer and starts the reachability probe. Does not wait for the
    /// broker: a collector starts (not ready) while the broker is still coming up.
    ///
    /// # Errors
    /// An invalid librdkafka setting.
    pub fn open(options: &KafkaConfig, metrics: Arc<Metrics>) -> Result<KafkaLog, OpenError> {
        let options = options.clone();
        let producer = create_producer(&options, &metrics)?;
        let producer = Arc::new(RwLock::new((0, producer)));
        let reachable = Arc::new(AtomicBool::new(false));
        let stop_probe = Arc::new(AtomicBool::new(false));
        spawn_probe(
            producer.clone(),
            options.topic.clone(),
            reachable.clone(),
            stop_probe.clone(),
        )
        .map_err(OpenError::Probe)?;
        Ok(KafkaLog {
            producer,
            options,
            closed: AtomicBool::new(false),
            reachable,
            stop_probe,
            metrics,
        })
    }

    fn current(&self) -> (u64, FutureProducer<Context>) {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces producer `generation` with a new one (a new producer id), unless another
    /// request already did.
    fn replace_producer(&self, generation: u64, cause: &KafkaError) {
        let mut current = self.producer.write().expect("producer lock");
        if current.0 != generation {
            return;
        }
        match create_producer(&self.options, &self.metrics) {
            Ok(producer) => {
                tracing::warn!(error = %cause, "the broker refused the producer's identity; starting a new producer");
                *current = (generation + 1, producer);
                self.metrics.kafka_producer_resets.add(1, &[]);
            }
            Err(e) => tracing::error!(error = %e, "starting a new kafka producer failed"),
        }
    }
}

/// A producer with Tollgate's settings.
fn create_producer(
    options: &KafkaConfig,
    metrics: &Arc<Metrics>,
) -> Result<FutureProducer<Context>, OpenError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", "tollgate-collector")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", options.compression.as_str())
        .set("linger.ms", options.linger.as_millis().to_string())
        .set("batch.size", options.batch_size.as_u64().to_string())
        .set(
            "queue.buffering.max.messages",
            options.queue_max_messages.get().to_string(),
        )
        .set(
            "message.timeout.ms",
            options.delivery_timeout.as_millis().to_string(),
        )
        .set("statistics.interval.ms", "5000")
        // A collector wants its broker back quickly after an outage: requests fail
        // with 503 until it is (librdkafka's default backs off up to 10 s).
        .set("reconnect.backoff.max.ms", "1000");
    for (key, value) in &options.properties {
        config.set(key, value);
    }
    config
        .create_with_context(Context {
            metrics: metrics.clone(),
        })
        .map_err(OpenError::Producer)
}

/// Whether a delivery error means the broker no longer accepts this producer's id or
/// epoch. librdkafka then retries forever with the same identity, so the only way back
/// is a new producer (and its new id). Such records were not persisted, so the client's
/// retry cannot duplicate them.
fn needs_new_producer(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::Fatal
        )
    )
}

impl KafkaLog {
    /// Queues one record; `Err` when librdkafka refuses it at once (queue full).
    fn send(
        &self,
        producer: &FutureProducer<Context>,
        topic: &str,
        payload: &[u8],
        meta: &RecordMeta,
        source: &str,
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(5);
        let version = meta.schema_version.map(|v| v.to_string());
        for (key, value) in [
            ("event_name", meta.event_name.as_deref()),
            ("schema_version", version.as_deref()),
            ("source", Some(source)),
            ("region", meta.region.as_deref()),
            ("error_code", meta.error_code),
        ] {
            if let Some(value) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
        }
        let mut record = FutureRecord::<str, [u8]>::to(topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = &meta.key {
            record = record.key(key.as_str());
        }
        producer.send_result(record).map_err(|(e, _)| e)
    }
}

/// Checks every few seconds that the broker answers and knows the events topic.
fn spawn_probe(
    producer: Arc<RwLock<(u64, FutureProducer<Context>)>>,
    topic: String,
    reachable: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tollgate-kafka-probe".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let current = producer.read().expect("producer lock").1.clone();
                let ok = current
                    .client()
                    .fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(2)))
                    .is_ok_and(|metadata| {
                        metadata
                            .topics()
                            .iter()
                            .any(|t| t.error().is_none() && !t.partitions().is_empty())
                    });
                if ok != reachable.swap(ok, Ordering::Relaxed) {
                    if ok {
                        tracing::info!(topic, "kafka broker reachable");
                    } else {
                        tracing::warn!(topic, "kafka broker or topic unreachable");
                    }
                }
                // Short sleeps so that close() does not wait for a whole period.
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .map(drop)
}

/// A stable metric label for a produce failure.
fn error_kind(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => "queue_full",
        Some(RDKafkaErrorCode::MessageTimedOut) => "timed_out",
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
            "broker_down"
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            "unknown_topic"
        }
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            "too_large"
        }
        _ => "produce_failed",
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(LogError::Closed);
        }
        let started = Instant::now();
        let (generation, producer) = self.current();
        let meta = batch
            .meta
            .as_ref()
            .expect("the pipeline fills meta for a log that asks for it");
        let (events_topic, quarantine_topic) = match (&self.options.shadow_topic, batch.shadow) {
            (Some(shadow), true) => (shadow.as_str(), shadow.as_str()),
            _ => (
                self.options.topic.as_str(),
                self.options.quarantine_topic.as_str(),
            ),
        };
        // Queue everything first (librdkafka batches it), then wait for every answer.
        let mut pending = Vec::with_capacity(meta.events.len() + meta.quarantine.len());
        let mut refused = None;
        let streams = [
            (events_topic, &batch.events, &meta.events, true),
            (quarantine_topic, &batch.quarantine, &meta.quarantine, false),
        ];
        'queue: for (topic, bytes, records, is_event) in streams {
            let mut start = 0;
            for (index, record) in records.iter().enumerate() {
                let payload = &bytes[start..record.end - 1];
                start = record.end;
                match self.send(&producer, topic, payload, record, &meta.source) {
                    Ok(delivery) => pending.push((is_event.then_some(index), delivery)),
                    Err(e) => {
                        refused = Some(e);
                        break 'queue;
                    }
                }
            }
        }
        self.metrics
            .kafka_in_flight
            .record(producer.in_flight_count() as i64, &[]);
        let mut delivered = vec![false; meta.events.len()];
        let mut failure = refused;
        let mut sent = 0u64;
        for (event, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {
                    sent += 1;
                    if let Some(i) = event {
                        delivered[i] = true;
                    }
                }
                Ok(Err((e, _))) => failure = Some(e),
                Err(_) => failure = Some(KafkaError::Canceled),
            }
        }
        self.metrics.kafka_messages.add(sent, &[]);
        let result = match failure {
            None => Ok(()),
            Some(e) if sent == 0 && e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                Err(LogError::QueueFull)
            }
            Some(e) => {
                if needs_new_producer(&e) || producer.client().fatal_error().is_some() {
                    self.replace_producer(generation, &e);
                }
                tracing::warn!(error = %e, delivered = sent, "kafka did not acknowledge every record; the request gets 503");
                Err(LogError::Delivery {
                    delivered_events: delivered.into(),
                    kind: error_kind(&e),
                    reason: e.to_string(),
                })
            }
        };
        self.metrics.observe_log_append(started, &result);
        result
    }

    fn ready(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.reachable.load(Ordering::Relaxed)
    }

    fn record_meta(&self) -> Option<PartitionKey> {
        Some(self.options.key)
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.stop_probe.store(true, Ordering::Relaxed);
        let (_, producer) = self.current();
        let timeout = self.options.delivery_timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("kafka producer flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the kafka producer failed"),
            Err(e) => tracing::warn!(error = %e, "flushing the kafka producer panicked"),
        }
    }
}
