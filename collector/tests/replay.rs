//! `replay`: quarantined events through today's pipeline. What a schema fix makes
//! valid is logged once — over reruns, a lost ledger (the Redis claims), an SDK retry,
//! and a run interrupted between its append and its ledger — with its original
//! `timestamp_server`; the quarantine is never rewritten; pseudonyms are not made
//! twice and consent is judged again; a dry run writes and locks nothing.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_collector::config::{Config, IdempotencyBackend};
use tollgate_collector::replay::{QuarantineInput, ReplayOptions, ReplayReport};
use tollgate_collector::telemetry::Metrics;
use tollgate_collector::{Collector, Overrides};

use support::redis_server::RedisServer;
use support::*;

/// `order_probe` v1 with a bug: `price` must be at least 0, but refunds are negative.
fn install(schemas: &Path, minimum: bool) {
    let mut price = json!({"type": "number"});
    if minimum {
        price["minimum"] = json!(0);
    }
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"price": price},
        "required": ["price"],
        "additionalProperties": true
    });
    std::fs::create_dir_all(schemas.join("order_probe")).unwrap();
    std::fs::write(schemas.join("order_probe/v1.json"), schema.to_string()).unwrap();
}

fn order(id: &str, price: Value) -> Value {
    let mut e = event(id);
    e["event_name"] = json!("order_probe");
    e["properties"] = json!({"price": price});
    e
}

struct Setup {
    _root: tempfile::TempDir,
    data: PathBuf,
    schemas: PathBuf,
    redis: Option<RedisServer>,
    privacy: Option<PathBuf>,
}

impl Setup {
    fn new(redis: bool) -> Setup {
        let root = tempfile::tempdir().unwrap();
        let schemas = root.path().join("schemas");
        install(&schemas, true);
        Setup {
            data: root.path().join("data"),
            schemas,
            _root: root,
            redis: redis.then(RedisServer::start),
            privacy: None,
        }
    }

    fn config(&self) -> Config {
        let mut config = test_config(&self.data);
        config.schemas.dir = self.schemas.clone();
        if let Some(redis) = &self.redis {
            config.idempotency.backend = IdempotencyBackend::Redis;
            config.idempotency.redis.url = redis.url();
        }
        if let Some(privacy) = &self.privacy {
            config.privacy.file = privacy.clone();
        }
        config
    }

    async fn collector(&self) -> TestCollector {
        let config = self.config();
        TestCollector::start_in(&self.data, move |c| *c = config, Overrides::default()).await
    }

    fn options(&self) -> ReplayOptions {
        ReplayOptions {
            input: QuarantineInput::Dir(self.data.join("quarantine")),
            events_dir: self.data.join("events"),
            since: None,
            until: None,
            event: None,
            code: None,
            dry_run: false,
            state_dir: self.data.join("replay"),
            batch: 1000,
            stop_after_appends: None,
        }
    }

    /// Runs a replay the way the command does: its own collector on the data dir.
    async fn replay(&self, options: &ReplayOptions) -> ReplayReport {
        self.try_replay(options).await.unwrap()
    }

    async fn try_replay(&self, options: &ReplayOptions) -> Result<ReplayReport, String> {
        let overrides = if options.dry_run {
            Overrides {
                log: Some(std::sync::Arc::new(tollgate_collector::replay::NoLog)),
                ..Overrides::default()
            }
        } else {
            Overrides::default()
        };
        let collector =
            Collector::build_with(self.config(), overrides).map_err(|e| e.to_string())?;
        let report = collector.replay(options).await.map_err(|e| e.to_string());
        collector.close().await;
        report
    }

    fn events(&self) -> Vec<Value> {
        read_lines(&self.data.join("events"))
    }

    fn quarantine_bytes(&self) -> String {
        written_under(&self.data.join("quarantine"))
    }
}

#[tokio::test]
async fn a_fixed_schema_lets_replay_log_the_quarantined_events_once() {
    let s = Setup::new(true);
    let mut c = s.collector().await;
    let body = json!({"events": [
        order("replay-0000001", json!(10)),
        order("replay-0000002", json!(-5)),
        order("replay-0000003", json!("ten")),
    ]});
    let (_, answer) = c.post("/v1/events", STRICT_KEY, &body).await;
    assert_eq!(answer["rejected"], 2, "{answer}");
    c.stop().await;
    let quarantined = s.quarantine_bytes();
    let original = read_lines(&s.data.join("quarantine"));

    // The dry run says what would happen and does nothing.
    install(&s.schemas, false);
    let dry = s
        .replay(&ReplayOptions {
            dry_run: true,
            ..s.options()
        })
        .await;
    assert_eq!((dry.totals.accepted, dry.selected), (1, 2));
    assert_eq!(dry.totals.rejected["schema_violation"], 1);
    assert_eq!(s.events().len(), 1);
    assert!(!s.data.join("replay").exists());

    let report = s.replay(&s.options()).await;
    assert_eq!(report.totals.accepted, 1, "{report:?}");
    assert_eq!(report.totals.rejected["schema_violation"], 1);
    let events = s.events();
    assert_eq!(events.len(), 2);
    let replayed = &events[1];
    let source = original
        .iter()
        .find(|q| q["event"]["event_id"] == "replay-0000002")
        .unwrap();
    assert_eq!(replayed["event_id"], "replay-0000002");
    assert_eq!(replayed["timestamp_server"], source["timestamp_server"]);
    assert_eq!(
        replayed["replay_of"],
        format!(
            "{}/{}",
            source["request_id"].as_str().unwrap(),
            source["index"]
        )
    );
    assert!(replayed["replayed_at"].is_string());
    assert_eq!(replayed["schema_set"].as_str().map(str::len), Some(12));
    // The quarantine is never rewritten, and the still-invalid event adds nothing.
    assert_eq!(s.quarantine_bytes(), quarantined);

    // Again: the ledger knows.
    let again = s.replay(&s.options()).await;
    assert_eq!((again.already_replayed, again.totals.accepted), (1, 0));
    // With the ledger lost, the claims in Redis know.
    let lost = s
        .replay(&ReplayOptions {
            state_dir: s.data.join("other-state"),
            ..s.options()
        })
        .await;
    assert_eq!((lost.totals.duplicate, lost.totals.accepted), (1, 0));
    // And an SDK retry of the replayed event is a duplicate.
    let c = s.collector().await;
    let retry = json!({"events": [order("replay-0000002", json!(-5))]});
    let (_, answer) = c.post("/v1/events", STRICT_KEY, &retry).await;
    assert_eq!(answer["duplicate"], 1, "{answer}");
    assert_eq!(count_id(&c.events(), "replay-0000002"), 1);
}

#[tokio::test]
async fn a_replay_interrupted_after_an_append_logs_nothing_twice_and_loses_nothing() {
    let mut s = Setup::new(true);
    let mut c = s.collector().await;
    for request in 0..3 {
        let body = json!({"events": [
            order(&format!("crash-{request}-00001"), json!(-1)),
            order(&format!("crash-{request}-00002"), json!(-2)),
        ]});
        assert_eq!(
            c.post("/v1/events", STRICT_KEY, &body).await.1["rejected"],
            2
        );
    }
    c.stop().await;
    install(&s.schemas, false);
    // The first group is appended and its claims committed; then the run stops before
    // its ledger says so, as a crash would.
    // Two events per append: three appends.
    let options = ReplayOptions {
        batch: 2,
        ..s.options()
    };
    let first = s
        .replay(&ReplayOptions {
            stop_after_appends: Some(1),
            ..options.clone()
        })
        .await;
    assert_eq!(first.totals.accepted, 0, "nothing was recorded as done");
    assert_eq!(s.events().len(), 2);
    // The crash came before the claims were committed, too: they still hold the
    // batch's token (without the recovery, their events would be `retry` now and
    // logged a second time once the claims expire).
    let ledger_path = s.data.join("replay/replay.ndjson");
    let ledger = std::fs::read_to_string(&ledger_path).unwrap();
    let intent: Value = serde_json::from_str(ledger.lines().next().unwrap()).unwrap();
    // With the store down, the interrupted run cannot be settled: the replay says so
    // and leaves the intent open for the next run.
    s.redis.as_mut().unwrap().kill();
    let error = s.try_replay(&options).await.unwrap_err();
    assert!(
        error.contains("run the replay again") || error.contains("redis"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&ledger_path).unwrap(), ledger);
    s.redis.as_mut().unwrap().restart();
    let redis = s.redis.as_ref().unwrap();
    for key in intent["keys"].as_array().unwrap() {
        let key = format!("tollgate:{}", key.as_str().unwrap());
        let token = format!("p:{}", intent["batch"].as_str().unwrap());
        assert!(
            redis
                .command(&format!("SET {key} {token} PX 600000"))
                .contains("OK")
        );
    }
    let rest = s.replay(&options).await;
    assert_eq!((rest.recovered, rest.released), (2, 0), "{rest:?}");
    assert_eq!(
        (rest.totals.accepted, rest.totals.retry),
        (4, 0),
        "{rest:?}"
    );
    assert_eq!(rest.already_replayed, 2, "{rest:?}");
    // The recovered events' claims were committed.
    let key = format!("tollgate:strict_app:{}", "crash-0-00001");
    assert_eq!(
        redis.command(&format!("GET {key}")),
        "$1\r\nd\r\n",
        "committed"
    );
    let events = s.events();
    assert_eq!(events.len(), 6);
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each event once");
}

#[tokio::test]
async fn a_replay_records_a_batch_done_only_once_its_claims_are_committed() {
    let mut s = Setup::new(false);
    s.redis = Some(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let mut c = s.collector().await;
    let body = json!({"events": [order("commit-wait-00001", json!(-1))]});
    assert_eq!(
        c.post("/v1/events", STRICT_KEY, &body).await.1["rejected"],
        1
    );
    c.stop().await;
    install(&s.schemas, false);

    // The replay's collector, its append held until Redis is asleep.
    let metrics = Arc::new(Metrics::new());
    let log = FaultyLog::new(file_log(&s.data, metrics.clone()));
    let gate = log.hold();
    let mut config = s.config();
    // Longer than the sleep below: the commit succeeds late, it does not time out.
    config.idempotency.redis.command_timeout = Duration::from_secs(20);
    config.server.request_timeout = Duration::from_secs(30);
    let overrides = Overrides {
        log: Some(log.clone()),
        metrics: Some(metrics),
        ..Overrides::default()
    };
    let collector = Collector::build_with(config, overrides).unwrap();
    let options = s.options();
    let (done, report) = tokio::sync::oneshot::channel();
    let replay = tokio::spawn(async move {
        let _ = done.send(collector.replay(&options).await);
        collector.close().await;
    });
    while log.appends.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let redis = s.redis.as_ref().unwrap();
    redis.sleep(4);
    log.release(&gate);
    let report = report.await.unwrap().unwrap();
    assert_eq!(report.totals.accepted, 1, "{report:?}");
    // The run recorded the batch done only after the commit's answer, which Redis gave
    // once awake: a rerun that lost its ledger finds the claim committed.
    assert!(redis.ping(), "the replay did not wait for its commit");
    assert_eq!(
        redis.command("GET tollgate:strict_app:commit-wait-00001"),
        "$1\r\nd\r\n"
    );
    replay.await.unwrap();
}

#[tokio::test]
async fn replay_neither_pseudonymizes_twice_nor_gets_around_consent() {
    let mut s = Setup::new(false);
    let mut config = Config::default();
    s.privacy = Some(with_policy(&mut config, "127.0.0.1/32"));
    let mut c = s.collector().await;
    let person = |id: &str, country: &str, consent: bool, price: i64| {
        let mut e = order(id, json!(price));
        e["user_id"] = json!("user-42");
        e["context"]["country"] = json!(country);
        e["consent"] = json!({"analytics": consent});
        e
    };
    let body = json!({"events": [
        person("privacy-000001", "GB", true, -1),
        person("privacy-000002", "DE", false, -1),
    ]});
    assert_eq!(
        c.post("/v1/events", STRICT_KEY, &body).await.1["rejected"],
        2
    );
    // The same person accepted directly, for the pseudonym to compare with.
    let direct = json!({"events": [person("privacy-000003", "GB", true, 5)]});
    assert_eq!(
        c.post("/v1/events", STRICT_KEY, &direct).await.1["accepted"],
        1
    );
    c.stop().await;
    install(&s.schemas, false);
    let report = s.replay(&s.options()).await;
    assert_eq!(report.totals.accepted, 1, "{report:?}");
    assert_eq!(report.totals.rejected["consent_denied"], 1, "{report:?}");
    let events = s.events();
    let by_id = |id: &str| events.iter().find(|e| e["event_id"] == id).cloned();
    let replayed = by_id("privacy-000001").unwrap();
    let accepted = by_id("privacy-000003").unwrap();
    assert_ne!(replayed["user_id"], "user-42");
    assert_eq!(replayed["user_id"], accepted["user_id"]);
    assert_eq!(replayed["privacy_policy"], "uk_gdpr@1");
    assert_eq!(replayed["privacy_key"], accepted["privacy_key"]);
    // The event without the consent its policy needs stays out of the log.
    assert!(by_id("privacy-000002").is_none());
    assert!(!written_under(&s.data.join("events")).contains("user-42"));
}

#[tokio::test]
async fn filters_select_what_is_replayed() {
    let s = Setup::new(false);
    let mut c = s.collector().await;
    let mut unknown = event("filter-0000003");
    unknown["event_name"] = json!("not_registered");
    let body = json!({"events": [
        order("filter-0000001", json!(-1)),
        order("filter-0000002", json!("x")),
        unknown,
    ]});
    assert_eq!(
        c.post("/v1/events", STRICT_KEY, &body).await.1["rejected"],
        3
    );
    c.stop().await;
    install(&s.schemas, false);
    let only = s
        .replay(&ReplayOptions {
            event: Some("not_registered".into()),
            ..s.options()
        })
        .await;
    assert_eq!((only.scanned, only.selected), (3, 1));
    assert_eq!(only.totals.rejected["unknown_event"], 1);
    let later = s
        .replay(&ReplayOptions {
            since: Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
            ..s.options()
        })
        .await;
    assert_eq!(later.selected, 0);
    let code = s
        .replay(&ReplayOptions {
            code: Some("unknown_event".into()),
            ..s.options()
        })
        .await;
    assert_eq!(code.selected, 1);
}

#[test]
fn the_command_replays_and_says_when_the_data_dir_is_in_use() {
    let root = tempfile::tempdir().unwrap();
    let (data, schemas) = (root.path().join("data"), root.path().join("schemas"));
    install(&schemas, true);
    let config = root.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[schemas]\ndir = {:?}\n[log]\ndata_dir = {:?}\n[privacy]\nfile = \"none\"\n\
             [[sources]]\nid = \"shop\"\nwrite_keys = [\"wk_shop\"]\n",
            schemas, data
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
            .arg("--config")
            .arg(&config)
            .arg("replay")
            .args(args)
            .output()
            .unwrap()
    };
    // A quarantine written by a collector with this configuration.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cfg = Config::load(Some(&config)).unwrap();
        cfg.server.admin_listen = None;
        let mut c = TestCollector::start_in(&data, move |c| *c = cfg, Overrides::default()).await;
        let body = json!({"events": [order("command-000001", json!(-1))]});
        assert_eq!(
            c.post("/v1/events", "wk_shop", &body).await.1["rejected"],
            1
        );
        // While it runs, the data directory is in use: a dry run works, a replay says so.
        let dry = run(&["--dry-run", "--json"]);
        assert_eq!(
            dry.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&dry.stderr)
        );
        let report: Value = serde_json::from_slice(&dry.stdout).unwrap();
        assert_eq!(report["totals"]["rejected"]["schema_violation"], 1);
        let busy = run(&[]);
        assert_eq!(busy.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&busy.stderr).contains("in use by another collector"),
            "{}",
            String::from_utf8_lossy(&busy.stderr)
        );
        c.stop().await;
    });
    install(&schemas, false);
    let done = run(&["--json"]);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let report: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(report["totals"]["accepted"], 1, "{report}");
    assert_eq!(
        count_id(&read_lines(&data.join("events")), "command-000001"),
        1
    );
}
