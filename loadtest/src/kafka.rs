//! Reading what a collector appended to Kafka, for reconciliation: each topic is read
//! from the beginning of every partition until no message arrived for `idle`
//! ([`for_each_message`]); end offsets are never trusted.

use std::time::Duration;

use rdkafka::Message;
/// Every message of a topic from the beginning, until none arrived for a while (shared
/// with the collector's audit).
pub use tollgate_collector::sink::for_each_message;

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
