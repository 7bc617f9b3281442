//! Reading what a collector appended to Kafka, for reconciliation.
//!
//! A topic is consumed from the beginning of every partition, without a consumer group
//! commit, until no message arrived for `idle`: end offsets are not trusted (not every
//! Kafka-compatible broker reports them exactly), counting what is actually there is.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

/// Kafka topics holding a collector's records.
#[derive(Debug, Clone)]
pub struct TopicSource {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Accepted events.
    pub topic: String,
    /// Rejected events; `None` skips the quarantine checks' source.
    pub quarantine_topic: Option<String>,
    /// Stop reading a topic after this long without a new message.
    pub idle: Duration,
}

impl TopicSource {
    /// Calls `f` with every record (parsed JSON payload) of `topic`.
    ///
    /// # Errors
    /// The broker cannot be reached or the topic does not exist.
    pub fn read(&self, topic: &str, mut f: impl FnMut(&serde_json::Value)) -> anyhow::Result<()> {
        for_each_message(&self.brokers, topic, self.idle, |message| {
            if let Some(payload) = message.payload()
                && let Ok(record) = serde_json::from_slice::<serde_json::Value>(payload)
            {
                f(&record);
            }
        })?;
        Ok(())
    }
}

/// Calls `f` with every message of `topic`, from the beginning of each partition, until
/// none arrived for `idle`. Returns how many messages it read.
///
/// # Errors
/// The broker cannot be reached or the topic does not exist.
pub fn for_each_message(
    brokers: &str,
    topic: &str,
    idle: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<u64> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("tollgate-verify-{}-{nanos}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10)))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow::anyhow!("topic {topic} does not exist on {brokers}"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition as i32, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut read = 0;
    let mut last = Instant::now();
    while last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                f(&message);
                read += 1;
                last = Instant::now();
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(read)
}
