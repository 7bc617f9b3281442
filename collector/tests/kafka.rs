//! The Kafka sink against a real Kafka-protocol broker on loopback: records land once,
//! keyed and with headers; a dead broker means 503 and released claims; three collector
//! processes with one Redis and one broker lose and double nothing; SIGTERM flushes.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Value, json};
use support::kafka_broker::{KafkaBroker, TcpProxy};
use support::redis_server::RedisServer;
use support::{
    TestCollector, assert_logged_exactly_once, batch, event, load_then_sigterm, spawn_binary,
};
use tollgate_collector::Overrides;
use tollgate_collector::config::{Config, SinkKind};
use tollgate_loadtest::generate::Scenario;
use tollgate_loadtest::run::{Model, RunConfig, run};
use tollgate_loadtest::verify::{LogSource, verify_source};
use tollgate_log::{TopicSource, for_each_message};

const EVENTS: &str = "tollgate.events";
const QUARANTINE: &str = "tollgate.quarantine";
const SHADOW: &str = "tollgate.shadow";
/// Long enough for every record of a finished request to be readable.
const IDLE: Duration = Duration::from_secs(3);

fn broker_with_topics() -> KafkaBroker {
    with_topics(KafkaBroker::start())
}

fn with_topics(broker: KafkaBroker) -> KafkaBroker {
    broker.create_topic(EVENTS, 3);
    broker.create_topic(QUARANTINE, 1);
    broker
}

fn use_kafka(config: &mut Config, broker: &KafkaBroker) {
    config.log.sink = SinkKind::Kafka;
    config.log.kafka.brokers = broker.address();
    config.log.kafka.delivery_timeout = Duration::from_secs(2);
    config.log.kafka.linger = Duration::from_millis(1);
    if std::env::var_os("KDEBUG").is_some() {
        config
            .log
            .kafka
            .properties
            .insert("debug".into(), "broker,msg,protocol,eos".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .try_init();
    }
}

/// One message as read back: key, headers and parsed payload.
struct Read {
    key: Option<String>,
    headers: HashMap<String, String>,
    record: Value,
}

/// Reads a whole topic from the beginning with an independent consumer.
async fn read_topic(broker: &KafkaBroker, topic: &str) -> Vec<Read> {
    let (address, topic) = (broker.address(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for_each_message(&address, &topic, IDLE, |message| {
            let mut headers = HashMap::new();
            if let Some(h) = message.headers() {
                for header in h.iter() {
                    let value = header
                        .value
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    headers.insert(header.key.to_owned(), value.unwrap_or_default());
                }
            }
            out.push(Read {
                key: message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned()),
                headers,
                record: serde_json::from_slice(message.payload().unwrap()).unwrap(),
            });
        })
        .unwrap();
        out
    })
    .await
    .unwrap()
}

async fn wait_ready(collector: &TestCollector, ready: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = collector
            .client
            .get(collector.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status();
        if (status == 200) == ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became {}",
            if ready { "ready" } else { "not ready" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_batch_is_on_the_topic_once_keyed_and_with_headers() {
    let broker = broker_with_topics();
    broker.create_topic(SHADOW, 1);
    let mut collector = TestCollector::start_with(
        |c| {
            use_kafka(c, &broker);
            c.log.kafka.shadow_topic = Some(SHADOW.into());
        },
        Overrides::default(),
    )
    .await;
    wait_ready(&collector, true).await;

    let mut anonymous = event("kafka-anon");
    anonymous["user_id"] = Value::Null;
    anonymous["device_id"] = json!("device-anon");
    let mut other_user = event("kafka-two");
    other_user["user_id"] = json!("user-2");
    let mut invalid = event("kafka-bad");
    invalid["timestamp_event"] = json!("yesterday");
    let body = json!({"events": [event("kafka-one"), other_user, anonymous, invalid]});
    let (status, answer) = collector.post_events(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(1)),
        "{answer}"
    );
    // The same batch again: duplicates and the rejected one, nothing new accepted.
    let (status, again) = collector.post_events(&body).await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], 3, "{again}");

    let events = read_topic(&broker, EVENTS).await;
    let mut ids: Vec<&str> = events
        .iter()
        .map(|r| r.record["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["kafka-anon", "kafka-one", "kafka-two"],
        "each accepted event exactly once"
    );
    for read in &events {
        let id = read.record["event_id"].as_str().unwrap();
        let expected_key = match id {
            "kafka-one" => "user-1",
            "kafka-two" => "user-2",
            _ => "device-anon",
        };
        assert_eq!(read.key.as_deref(), Some(expected_key), "key of {id}");
        assert_eq!(read.headers["event_name"], "item_view");
        assert_eq!(read.headers["schema_version"], "1");
        assert_eq!(read.headers["source"], "dev");
        assert_eq!(
            read.headers["region"],
            read.record["region"].as_str().unwrap()
        );
        assert_eq!(
            read.record["source"], "dev",
            "the same record as the local log"
        );
        assert!(read.record["timestamp_server"].is_string());
    }
    let quarantined = read_topic(&broker, QUARANTINE).await;
    // The rejected event was sent twice and is quarantined twice (as on the local log).
    assert_eq!(quarantined.len(), 2);
    assert_eq!(quarantined[0].headers["error_code"], "invalid_value");
    assert_eq!(quarantined[0].record["event"]["event_id"], "kafka-bad");
    assert!(
        collector
            .metrics()
            .await
            .contains("tollgate_kafka_messages_total")
    );
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_means_503_and_released_claims_and_the_retry_lands_once() {
    // The collector reaches the broker only through a proxy that the test cuts.
    let (listener, proxy_port) = TcpProxy::bind().await;
    let broker = with_topics(KafkaBroker::start_advertising(Some(proxy_port)));
    let proxy = TcpProxy::forward_to(listener, broker.port);
    let mut collector =
        TestCollector::start_with(|c| use_kafka(c, &broker), Overrides::default()).await;
    wait_ready(&collector, true).await;
    let (status, _) = collector.post_events(&batch(&["before-0001"])).await;
    assert_eq!(status, 200);

    proxy.cut();
    let down = batch(&["down-0001", "down-0002", "down-0003"]);
    let (status, answer) = collector.post_events(&down).await;
    assert_eq!(status, 503, "never 200 for unacknowledged events: {answer}");
    assert_eq!(answer["error"]["code"], "log_unavailable");
    wait_ready(&collector, false).await;
    let metrics = collector.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_log_errors_total") && !l.contains("queue_full")),
        "{metrics}"
    );

    proxy.restore();
    wait_ready(&collector, true).await;
    // The SDK retries until it gets an answer (a producer whose identity the broker no
    // longer accepts is replaced on the first failure). The retry is accepted, not
    // answered `duplicate`: the failed requests' claims were released.
    let mut answer = Value::Null;
    for _ in 0..5 {
        let (status, body) = collector.post_events(&down).await;
        answer = body;
        if status == 200 {
            break;
        }
        assert_eq!(answer["error"]["code"], "log_unavailable", "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer["accepted"], 3, "{answer}");
    let events = read_topic(&broker, EVENTS).await;
    for id in ["down-0001", "down-0002", "down-0003"] {
        let n = events.iter().filter(|r| r.record["event_id"] == id).count();
        assert_eq!(n, 1, "{id} is on the topic exactly once");
    }
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_one_redis_one_broker_lose_and_double_nothing() {
    let broker = broker_with_topics();
    let redis = RedisServer::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut children = Vec::new();
    let mut targets = Vec::new();
    for dir in &dirs {
        let (child, addr) = spawn_binary(
            dir.path(),
            &["--kafka", &broker.address(), "--redis", &redis.url()],
        );
        children.push(child);
        targets.push(format!("http://{addr}"));
    }
    let manifest = dirs[0].path().join("manifest.ndjson");
    let report = run(RunConfig {
        targets,
        write_key: "dev".into(),
        model: Model::Closed { connections: 12 },
        duration: None,
        requests: Some(1500),
        seed: 7,
        run_id: "kafka3".into(),
        scenario: Scenario {
            batch_size: 10,
            // Every retry goes to a different collector than its first send.
            retry_rate: 0.15,
            invalid_rate: 0.02,
            late_rate: 0.02,
            ..Scenario::default()
        },
        manifest: Some(manifest.clone()),
        http2: false,
        gzip: false,
        ca_file: None,
        scrape: None,
    })
    .await
    .unwrap();
    assert!(
        report
            .outcomes
            .events
            .get("duplicate")
            .copied()
            .unwrap_or(0)
            > 0,
        "retries on another collector are answered duplicate: {:?}",
        report.outcomes
    );
    let source = LogSource::Kafka(TopicSource {
        brokers: broker.address(),
        topic: EVENTS.into(),
        quarantine_topic: Some(QUARANTINE.into()),
        idle: IDLE,
    });
    let verification = tokio::task::spawn_blocking(move || verify_source(&manifest, &source))
        .await
        .unwrap()
        .unwrap();
    assert!(verification.acknowledged > 10_000, "{verification:?}");
    assert_eq!(verification.lost, 0, "{verification:?}");
    assert_eq!(verification.duplicated, 0, "{verification:?}");
    assert_eq!(verification.invalid_not_quarantined, 0, "{verification:?}");
    assert!(verification.clean(), "{verification:?}");
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_leaves_every_acknowledged_event_on_the_topic() {
    let broker = broker_with_topics();
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_binary(dir.path(), &["--kafka", &broker.address()]);
    let acknowledged = load_then_sigterm(child, &addr).await;
    assert!(acknowledged.len() >= 1000);
    let events = read_topic(&broker, EVENTS).await;
    assert_logged_exactly_once(
        &acknowledged,
        events
            .iter()
            .map(|r| r.record["event_id"].as_str().unwrap()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_reads_the_topics_like_a_log_directory() {
    let broker = broker_with_topics();
    let mut collector =
        TestCollector::start_with(|c| use_kafka(c, &broker), Overrides::default()).await;
    wait_ready(&collector, true).await;
    let mut no_session = event("audit-0003");
    no_session["session_id"] = Value::Null;
    let mut invalid = event("audit-0004");
    invalid["timestamp_event"] = json!("yesterday");
    let body = json!({"events": [event("audit-0001"), event("audit-0002"), no_session, invalid]});
    let (status, answer) = collector.post_events(&body).await;
    assert_eq!(status, 200, "{answer}");
    collector.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expectations.toml");
    std::fs::write(
        &file,
        "[defaults]\nmin_valid_share = 0.5\n[[events]]\nname = \"item_view\"\nnot_null = [\"session_id\"]\n",
    )
    .unwrap();
    let expectations = tollgate_audit::Expectations::load(&file).unwrap();
    let options = tollgate_audit::AuditOptions::new(
        tollgate_audit::AuditInput::Kafka(TopicSource {
            brokers: broker.address(),
            topic: EVENTS.into(),
            quarantine_topic: Some(QUARANTINE.into()),
            idle: IDLE,
        }),
        0,
    );
    let report = tokio::task::spawn_blocking(move || {
        tollgate_audit::audit(&options, &expectations).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        (report.records, report.quarantined),
        (3, 1),
        "{}",
        report.human()
    );
    let not_null = report
        .checks
        .iter()
        .find(|c| c.expectation == "not_null")
        .unwrap();
    assert_eq!(not_null.status, tollgate_audit::Status::Fail);
    assert!(
        not_null.detail.starts_with("session_id: 1 of 3"),
        "{}",
        not_null.detail
    );
    let valid = report
        .checks
        .iter()
        .find(|c| c.expectation == "valid_share")
        .unwrap();
    assert_eq!(valid.status, tollgate_audit::Status::Pass, "3 of 4 valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_the_quarantine_topic_beside_a_live_collector_and_recovers_from_the_events_topic()
 {
    use tollgate_collector::replay::{QuarantineInput, ReplayOptions};
    let broker = broker_with_topics();
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let schemas = root.path().join("schemas");
    let install = |minimum: bool| {
        let mut price = json!({"type": "number"});
        if minimum {
            price["minimum"] = json!(0);
        }
        let schema =
            json!({"type": "object", "properties": {"price": price}, "required": ["price"]});
        std::fs::create_dir_all(schemas.join("order_probe")).unwrap();
        std::fs::write(schemas.join("order_probe/v1.json"), schema.to_string()).unwrap();
    };
    install(true);
    let tweak = |config: &mut Config| {
        use_kafka(config, &broker);
        config.schemas.dir = schemas.clone();
        config.idempotency.backend = tollgate_collector::config::IdempotencyBackend::Redis;
        config.idempotency.redis.url = redis.url();
    };
    let c = TestCollector::start_with(tweak, Overrides::default()).await;
    for n in 0..2 {
        let mut e = event(&format!("kreplay-{n:07}"));
        e["event_name"] = json!("order_probe");
        e["properties"] = json!({"price": -1});
        let (_, answer) = c
            .post("/v1/events", support::STRICT_KEY, &json!({"events": [e]}))
            .await;
        assert_eq!(answer["rejected"], 1, "{answer}");
    }
    install(false);
    // The live collector keeps serving; the replay needs no lock with Kafka.
    let state = tempfile::tempdir().unwrap();
    let mut config = support::test_config(state.path());
    tweak(&mut config);
    let options = ReplayOptions {
        input: QuarantineInput::Kafka(TopicSource {
            brokers: broker.address(),
            topic: EVENTS.into(),
            quarantine_topic: Some(QUARANTINE.into()),
            idle: IDLE,
        }),
        events_dir: state.path().join("events"),
        since: None,
        until: None,
        event: None,
        code: None,
        dry_run: false,
        state_dir: state.path().join("replay"),
        // One event per append, so that the first run stops after one of the two.
        batch: 1,
        stop_after_appends: Some(1),
    };
    let replay = |options: ReplayOptions| {
        let config = config.clone();
        async move {
            let collector =
                tollgate_collector::Collector::build_with(config, Overrides::default()).unwrap();
            let report = collector.replay(&options).await.unwrap();
            collector.close().await;
            report
        }
    };
    // Interrupted after its first append; the next run finds that record in the events
    // topic and replays only the other.
    replay(options.clone()).await;
    let rest = replay(ReplayOptions {
        stop_after_appends: None,
        ..options
    })
    .await;
    assert_eq!((rest.recovered, rest.totals.accepted), (1, 1), "{rest:?}");
    let records = read_topic(&broker, EVENTS).await;
    let mut replayed: Vec<&str> = records
        .iter()
        .filter(|r| r.record["replay_of"].is_string())
        .map(|r| r.record["event_id"].as_str().unwrap())
        .collect();
    replayed.sort_unstable();
    assert_eq!(replayed, ["kreplay-0000000", "kreplay-0000001"]);
}

/// Appends the lines to a topic as a collector would (keyed by session), each message
/// stamped with its record's time.
fn produce(brokers: &str, topic: &str, lines: &[&support::weeks::Line]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for line in lines {
        let mut record = BaseRecord::to(topic)
            .key(line.session.as_str())
            .payload(line.text.as_str())
            .timestamp(line.t / 1000);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_audit_from_kafka_agrees_with_the_log_directory_and_says_how_it_found_the_history()
{
    use support::weeks::{self, DAY, LAST_DAY};
    let broker = broker_with_topics();
    let dir = tempfile::tempdir().unwrap();
    let address = broker.address();
    let report = tokio::task::spawn_blocking(move || {
        let days = weeks::log(&weeks::ALL);
        weeks::write(dir.path(), &days);
        let events: Vec<_> = days.iter().flat_map(|d| &d.events).collect();
        let quarantine: Vec<_> = days.iter().flat_map(|d| &d.quarantine).collect();
        produce(&address, EVENTS, &events);
        produce(&address, QUARANTINE, &quarantine);
        let file = dir.path().join("expectations.toml");
        std::fs::write(&file, weeks::EXPECTATIONS).unwrap();
        let expectations = tollgate_audit::Expectations::load(&file).unwrap();
        let options = |input| {
            let mut o = tollgate_audit::AuditOptions::new(input, LAST_DAY + DAY + 600_000_000);
            (o.since, o.until) = (Some(LAST_DAY), Some(LAST_DAY + DAY));
            o
        };
        let kafka = tollgate_audit::audit(
            &options(tollgate_audit::AuditInput::Kafka(TopicSource {
                brokers: address.clone(),
                topic: EVENTS.into(),
                quarantine_topic: Some(QUARANTINE.into()),
                idle: IDLE,
            })),
            &expectations,
        )
        .unwrap();
        let files = tollgate_audit::audit(
            &options(tollgate_audit::AuditInput::Dir(dir.path().to_owned())),
            &expectations,
        )
        .unwrap();
        (kafka, files, events.len())
    })
    .await
    .unwrap();
    let (kafka, files, produced) = report;
    let failed: Vec<_> = kafka
        .checks
        .iter()
        .filter(|c| c.status == tollgate_audit::Status::Fail)
        .map(|c| c.expectation.as_str())
        .collect();
    for defect in support::weeks::ALL {
        let (expectation, _) = support::weeks::flagged_by(defect);
        assert!(
            failed.contains(&expectation),
            "{defect:?}: {}",
            kafka.human()
        );
    }
    // The test broker answers a search by time with the first offset: the audit notices
    // (the first message is older than asked), says so, and filters by the records' own
    // times, with the same findings.
    let history = kafka.history.as_ref().unwrap();
    assert_eq!(
        history.kafka.as_deref(),
        Some("read from the beginning: the broker could not find offsets by time"),
        "{}",
        kafka.summary()
    );
    assert!(
        kafka.run.records_read as usize >= produced,
        "{}",
        kafka.run.records_read
    );
    use support::weeks::findings;
    assert_eq!(findings(&kafka), findings(&files));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_read_in_time_order_across_its_partitions() {
    // Checks that keep a window over the log (duplicates within a day, a `to` within an
    // hour of its `from`) need the partitions merged by time: read one after the other,
    // a partition's messages can be hours of log time behind the other's.
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let broker = KafkaBroker::start();
    broker.create_topic("ordered", 2);
    let address = broker.address();
    let times = tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &address)
            .create()
            .unwrap();
        // Partition 0 holds the even seconds, partition 1 the odd ones.
        for i in 0..600_i64 {
            let t = 1_700_000_000_000 + i * 1000;
            let payload = t.to_string();
            let record = BaseRecord::<str, str>::to("ordered")
                .partition((i % 2) as i32)
                .payload(&payload)
                .timestamp(t);
            producer.send(record).map_err(|(e, _)| e).unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let mut times = Vec::new();
        for_each_message(&address, "ordered", IDLE, |message| {
            times.push(message.timestamp().to_millis().unwrap());
        })
        .unwrap();
        times
    })
    .await
    .unwrap();
    assert_eq!(times.len(), 600);
    let disorder = times.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(disorder, 0, "{times:?}");
}
