//! Kafka topics a collector appended to, read from the beginning of every partition (or
//! from a time, where the broker can find it) until no message arrived for a while. End
//! offsets are never trusted: a broker may report them before every acknowledged message
//! is readable. The partitions are merged by message time, so a reader sees the topic in
//! the order it was written, as it would a log directory: the audit's windowed checks
//! (duplicates within a day, a reference within an hour) depend on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

/// Reading a topic failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic} does not exist on {brokers}")]
    NoSuchTopic { topic: String, brokers: String },
    #[error("reading {topic} from {brokers}: {source}")]
    Kafka {
        topic: String,
        brokers: String,
        // Boxed: a KafkaError is large, and errors travel by value.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
}

/// Command-line flags of the tools that read what collectors appended to Kafka
/// (`tollgate-collector audit`, `tollgate-loadtest verify`).
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    /// Read the records from Kafka instead of a log directory: bootstrap brokers
    /// host:port[,…]. Topics are read from the beginning.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// Topic of accepted events (with --kafka).
    #[arg(long, default_value = "tollgate.events", requires = "kafka")]
    pub topic: String,
    /// Topic of rejected events (with --kafka); "" skips it.
    #[arg(long, default_value = "tollgate.quarantine", requires = "kafka")]
    pub quarantine_topic: String,
    /// Stop reading a topic after this long without a new message.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
}

impl TopicArgs {
    /// The quarantine topic, unless skipped with "".
    pub fn quarantine(&self) -> Option<String> {
        Some(self.quarantine_topic.clone()).filter(|t| !t.is_empty())
    }

    /// The topics to read, when `--kafka` was given.
    pub fn source(&self) -> Option<TopicSource> {
        self.kafka.as_ref().map(|brokers| TopicSource {
            brokers: brokers.clone(),
            topic: self.topic.clone(),
            quarantine_topic: self.quarantine(),
            idle: self.idle,
        })
    }
}

/// Kafka topics holding a collector's records.
#[derive(Debug, Clone)]
pub struct TopicSource {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Accepted events.
    pub topic: String,
    /// Rejected events; `None` skips the quarantine.
    pub quarantine_topic: Option<String>,
    /// Stop reading a topic after this long without a new message.
    pub idle: Duration,
}

impl TopicSource {
    /// Calls `f` with every record (parsed JSON payload) of `topic`.
    ///
    /// # Errors
    /// The broker cannot be reached or the topic does not exist.
    pub fn read(
        &self,
        topic: &str,
        mut f: impl FnMut(&serde_json::Value),
    ) -> Result<u64, TopicError> {
        for_each_message(&self.brokers, topic, self.idle, |message| {
            if let Some(payload) = message.payload()
                && let Ok(record) = serde_json::from_slice::<serde_json::Value>(payload)
            {
                f(&record);
            }
        })
    }

    /// Calls `f` with every record of `topic` as text (UTF-8 payloads only).
    ///
    /// # Errors
    /// As [`TopicSource::read`].
    pub fn lines(&self, topic: &str, f: impl FnMut(&str)) -> Result<u64, TopicError> {
        self.lines_from(topic, None, f).map(|(read, _)| read)
    }

    /// As [`TopicSource::lines`], from the first message of each partition whose
    /// timestamp is at or after `from` (unix ms), when given and the broker can tell.
    ///
    /// # Errors
    /// As [`TopicSource::read`].
    pub fn lines_from(
        &self,
        topic: &str,
        from: Option<i64>,
        mut f: impl FnMut(&str),
    ) -> Result<(u64, Start), TopicError> {
        for_each_message_from(&self.brokers, topic, from, self.idle, |message| {
            if let Some(Ok(text)) = message.payload_view::<str>() {
                f(text);
            }
        })
    }
}

/// Where reading a topic started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The beginning of every partition (no time was asked for).
    Beginning,
    /// The first message at or after the time asked for, found by timestamp.
    Timestamp,
    /// The beginning of every partition (or wherever the broker pointed): it could not
    /// find offsets for the time asked for (it answered with an error, without offsets,
    /// or with an offset whose message is older than asked).
    NoTimeIndex,
}

/// Calls `f` with every message of `topic`, from the beginning of each partition, oldest
/// first across partitions, until none arrived for `idle`, and returns how many it read.
///
/// # Errors
/// The broker cannot be reached, the topic does not exist, or a read fails.
pub fn for_each_message(
    brokers: &str,
    topic: &str,
    idle: Duration,
    f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, TopicError> {
    for_each_message_from(brokers, topic, None, idle, f).map(|(read, _)| read)
}

/// As [`for_each_message`], from the first message of each partition whose timestamp is
/// at or after `from` (unix ms) when given. The offsets are asked of the broker
/// (ListOffsets by timestamp); where it cannot answer, every partition is read from the
/// beginning and the caller filters by the records' own times ([`Start::NoTimeIndex`]).
///
/// # Errors
/// As [`for_each_message`].
pub fn for_each_message_from(
    brokers: &str,
    topic: &str,
    from: Option<i64>,
    idle: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(u64, Start), TopicError> {
    let kafka = |source| TopicError::Kafka {
        topic: topic.to_owned(),
        brokers: brokers.to_owned(),
        source: Box::new(source),
    };
    // A group of its own: offsets are neither read nor committed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("tollgate-reader-{}-{nanos}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Tells the reader a partition has nothing more, so it need not wait for it.
        .set("enable.partition.eof", "true")
        .create()
        .map_err(kafka)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10)))
        .map_err(kafka)?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0)
        .ok_or_else(|| TopicError::NoSuchTopic {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        })?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .map_err(kafka)?;
    }
    let mut start = Start::Beginning;
    if let Some(from) = from {
        start = Start::NoTimeIndex;
        if let Some(found) = offsets_at(&consumer, topic, partitions, from) {
            assignment = found;
            start = Start::Timestamp;
        }
    }
    consumer.assign(&assignment).map_err(kafka)?;
    // One queue per partition (split after `assign`, which deactivates earlier splits),
    // so the reader can take from whichever partition holds the oldest message.
    let consumer = Arc::new(consumer);
    let queues = (0..partitions)
        .map(|p| consumer.split_partition_queue(topic, p as i32))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| TopicError::NoSuchTopic {
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
        })?;
    let mut lanes: Vec<Lane<'_>> = queues.iter().map(Lane::new).collect();
    let mut read = 0;
    // A broker that answers a search by time without honouring it (some answer with the
    // first offset) shows in the first message of a partition being older than asked.
    let mut first_seen = vec![false; partitions];
    loop {
        // Serves the consumer's own events; messages (and the ends of partitions) arrive
        // on the partition queues.
        if let Some(Err(e)) = consumer.poll(Duration::ZERO)
            && !matches!(e, KafkaError::PartitionEOF(_))
        {
            return Err(kafka(e));
        }
        for lane in &mut lanes {
            lane.fill(Duration::ZERO).map_err(kafka)?;
        }
        // The oldest message goes first, once every partition either holds its next
        // message or has nothing more for now.
        let owed = lanes.iter().position(|l| l.owed(idle));
        let oldest = lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.head.is_some())
            .min_by_key(|(_, l)| l.time())
            .map(|(p, _)| p);
        match (owed, oldest) {
            (None, Some(p)) => {
                let Some(message) = lanes[p].head.take() else {
                    continue;
                };
                if let (Start::Timestamp, Some(from)) = (start, from)
                    && !std::mem::replace(&mut first_seen[p], true)
                    && message.timestamp().to_millis().is_some_and(|t| t < from)
                {
                    tracing::warn!(
                        topic,
                        "the broker did not find offsets by time: reading from the beginning"
                    );
                    start = Start::NoTimeIndex;
                }
                f(&message);
                read += 1;
            }
            (Some(p), _) => lanes[p].fill(POLL).map_err(kafka)?,
            (None, None) if lanes.iter().all(|l| l.heard.elapsed() >= idle) => break,
            (None, None) => std::thread::sleep(POLL),
        }
    }
    Ok((read, start))
}

/// How long the reader blocks on one partition before looking at the others again.
const POLL: Duration = Duration::from_millis(10);

/// One partition's queue and the message it holds back until it is the oldest.
struct Lane<'q> {
    queue: &'q PartitionQueue<DefaultConsumerContext>,
    head: Option<BorrowedMessage<'q>>,
    /// The broker said the partition has no more messages (until new ones arrive).
    at_end: bool,
    /// When the partition last delivered a message or reached its end.
    heard: Instant,
}

impl<'q> Lane<'q> {
    fn new(queue: &'q PartitionQueue<DefaultConsumerContext>) -> Self {
        Lane {
            queue,
            head: None,
            at_end: false,
            heard: Instant::now(),
        }
    }

    /// Takes the partition's next message (or its end) when it holds none, waiting up
    /// to `wait`.
    fn fill(&mut self, wait: Duration) -> Result<(), KafkaError> {
        if self.head.is_some() {
            return Ok(());
        }
        match self.queue.poll(wait) {
            Some(Ok(message)) => {
                self.head = Some(message);
                self.at_end = false;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => self.at_end = true,
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
        self.heard = Instant::now();
        Ok(())
    }

    /// Whether the partition may still deliver a message older than the others' heads:
    /// it holds none, has not reached its end and has not been quiet for `idle`.
    fn owed(&self, idle: Duration) -> bool {
        self.head.is_none() && !self.at_end && self.heard.elapsed() < idle
    }

    /// The held message's time (unix ms); messages without one go first.
    fn time(&self) -> i64 {
        self.head
            .as_ref()
            .and_then(|m| m.timestamp().to_millis())
            .unwrap_or(i64::MIN)
    }
}

/// Each partition's first offset at or after `from` (unix ms), or `None` when the broker
/// cannot tell for every partition. A partition with no message that late starts at its
/// end.
fn offsets_at(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: usize,
    from: i64,
) -> Option<TopicPartitionList> {
    let mut times = TopicPartitionList::new();
    for partition in 0..partitions {
        times
            .add_partition_offset(topic, partition as i32, Offset::Offset(from))
            .ok()?;
    }
    let found = consumer
        .offsets_for_times(times, Duration::from_secs(10))
        .map_err(|e| tracing::warn!(topic, error = %e, "offsets by time not available"))
        .ok()?;
    let mut assignment = TopicPartitionList::new();
    for element in found.elements() {
        element.error().ok()?;
        let offset = match element.offset() {
            Offset::Offset(n) if n >= 0 => Offset::Offset(n),
            Offset::End => Offset::End,
            other => {
                tracing::warn!(topic, partition = element.partition(), offset = ?other, "no offset for the time asked");
                return None;
            }
        };
        assignment
            .add_partition_offset(topic, element.partition(), offset)
            .ok()?;
    }
    (assignment.count() == partitions).then_some(assignment)
}
