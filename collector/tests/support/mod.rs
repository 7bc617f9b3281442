//! Test harness: a real collector on 127.0.0.1:0 with its own data directory, and
//! readers for what it logged.

#![allow(dead_code)]

pub mod kafka_broker;
pub mod redis_server;
pub mod weeks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tollgate_collector::config::{Config, SourceConfig};
use tollgate_collector::sink::{AppendBatch, EventLog, FileLog, LogConfig, LogError};
use tollgate_collector::telemetry::Metrics;
use tollgate_collector::{Collector, Overrides};

pub const DEV_KEY: &str = "dev";
/// A source that only accepts registered events.
pub const STRICT_KEY: &str = "wk_strict";
/// The Snowplow app id bound to the strict source.
pub const STRICT_APP: &str = "shop-strict";

/// The repository's example schemas.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/schemas")
}

/// The embedded defaults, pointed at a temp data dir, plus a strict source.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::embedded();
    config.schemas.dir = schemas_dir();
    config.log.data_dir = data_dir.to_owned();
    config.sources.push(SourceConfig {
        id: "strict_app".into(),
        write_keys: vec![STRICT_KEY.into()],
        app_ids: vec![STRICT_APP.into()],
        allow_unknown_events: false,
        write_keys_file: None,
        rate_limit: Default::default(),
    });
    config
}

/// A collector serving on loopback until dropped or shut down.
pub struct TestCollector {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub data: PathBuf,
    pub client: reqwest::Client,
    /// Reloads the collector's schemas, as SIGHUP does.
    pub reloader: tollgate_collector::Reloader,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

impl TestCollector {
    pub async fn start() -> TestCollector {
        Self::start_with(|_| {}, Overrides::default()).await
    }

    pub async fn start_with(
        tweak: impl FnOnce(&mut Config),
        overrides: Overrides,
    ) -> TestCollector {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Self::start_in(dir.path(), tweak, overrides).await;
        t._dir = Some(dir);
        t
    }

    /// Starts on an existing data directory (for restart tests).
    pub async fn start_in(
        data: &Path,
        tweak: impl FnOnce(&mut Config),
        overrides: Overrides,
    ) -> TestCollector {
        let mut config = test_config(data);
        tweak(&mut config);
        let collector = Collector::build_with(config, overrides).expect("collector builds");
        let reloader = collector.reloader();
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = public.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(collector.run(public, Some(admin), async move {
            let _ = rx.await;
        }));
        TestCollector {
            addr,
            admin: admin_addr,
            data: data.to_owned(),
            client: reqwest::Client::new(),
            reloader,
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// POSTs a native JSON body with the dev key.
    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        self.post("/v1/events", DEV_KEY, body).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .basic_auth(key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap();
        into_parts(response).await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Graceful shutdown; returns once the log is closed. The data stays readable.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub fn events(&self) -> Vec<Value> {
        read_lines(&self.data.join("events"))
    }

    pub fn quarantine(&self) -> Vec<Value> {
        read_lines(&self.data.join("quarantine"))
    }
}

/// A collector on a real file log that the test can make fail or hold ([`FaultyLog`]).
pub async fn start_with_faulty_log(
    tweak: impl FnOnce(&mut Config),
) -> (TestCollector, Arc<FaultyLog>) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let log = FaultyLog::new(file_log(dir.path(), metrics.clone()));
    let overrides = Overrides {
        log: Some(log.clone()),
        metrics: Some(metrics),
        ..Overrides::default()
    };
    let mut c = TestCollector::start_in(dir.path(), tweak, overrides).await;
    c._dir = Some(dir);
    (c, log)
}

/// POSTs a native body to `url` with the dev key and returns the raw response.
pub async fn send(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    client
        .post(url)
        .basic_auth(DEV_KEY, Some(""))
        .json(body)
        .send()
        .await
        .unwrap()
}

pub async fn into_parts(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, body)
}

/// Every record of a stream directory, oldest first. Each line must parse.
pub fn read_lines(dir: &Path) -> Vec<Value> {
    let Ok(files) = tollgate_collector::sink::segments(dir) else {
        return Vec::new();
    };
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "torn line in {}",
                f.display()
            );
            text.lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l)
                        .unwrap_or_else(|e| panic!("bad line {l:?}: {e}"))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The shipped privacy policies (EU, UK, California, default).
pub fn shipped_privacy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/privacy.toml")
}

/// Points `config` at a copy of the shipped policies whose region header is believed
/// from `trusted` only; returns the copy's path.
pub fn with_policy(config: &mut Config, trusted: &str) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let text = std::fs::read_to_string(shipped_privacy()).unwrap().replace(
        "trusted_proxies = [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]",
        &format!("trusted_proxies = [\"{trusted}\"]"),
    );
    let path = dir.join("privacy.toml");
    std::fs::write(&path, text).unwrap();
    config.privacy.file = path.clone();
    path
}

/// Every byte of every file below `dir`, as text (for scans for what must not be there).
pub fn written_under(dir: &Path) -> String {
    let mut written = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path) {
            written.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    written
}

/// A valid native event.
pub fn event(id: &str) -> Value {
    serde_json::json!({
        "event_id": id,
        "event_name": "item_view",
        "schema_version": 1,
        "user_id": "user-1",
        "device_id": "device-1",
        "session_id": "session-1",
        "timestamp_event": "2026-11-29T10:00:00.000Z",
        "platform": "ios",
        "app_version": "5.1.0",
        "surface": "feed",
        "experiment_ids": ["exp_a"],
        "consent": {"analytics": true},
        "context": {"locale": "en-GB"},
        "properties": {"item_id": format!("item-{id}"), "position": 3}
    })
}

pub fn batch(ids: &[&str]) -> Value {
    serde_json::json!({"events": ids.iter().map(|id| event(id)).collect::<Vec<_>>()})
}

/// Count of records in `records` with this `event_id`.
pub fn count_id(records: &[Value], id: &str) -> usize {
    records.iter().filter(|r| r["event_id"] == id).count()
}

pub fn file_log(data: &Path, metrics: Arc<Metrics>) -> FileLog {
    let config = LogConfig {
        queue_capacity: std::num::NonZeroUsize::new(64).unwrap(),
        commit_delay: std::time::Duration::ZERO,
        ..LogConfig::default()
    };
    FileLog::open(data, &config, metrics).unwrap()
}

/// A real file log that can be made to fail its next appends (a disk that fills up),
/// or to hold appends until released (a slow disk).
pub struct FaultyLog {
    pub inner: FileLog,
    pub fail_next: AtomicUsize,
    pub hold: std::sync::Mutex<Option<Arc<Notify>>>,
    pub appends: AtomicUsize,
    /// The next append writes only the accepted records marked `true` and reports the
    /// rest undelivered, as a broker that acknowledged part of a batch does.
    pub deliver_only: std::sync::Mutex<Option<Vec<bool>>>,
}

impl FaultyLog {
    pub fn new(inner: FileLog) -> Arc<FaultyLog> {
        Arc::new(FaultyLog {
            inner,
            fail_next: AtomicUsize::new(0),
            hold: std::sync::Mutex::new(None),
            appends: AtomicUsize::new(0),
            deliver_only: std::sync::Mutex::new(None),
        })
    }

    /// Appends wait until the returned gate is opened.
    pub fn hold(&self) -> Arc<Notify> {
        let gate = Arc::new(Notify::new());
        *self.hold.lock().unwrap() = Some(gate.clone());
        gate
    }

    pub fn release(&self, gate: &Notify) {
        *self.hold.lock().unwrap() = None;
        gate.notify_waiters();
    }
}

#[async_trait]
impl EventLog for FaultyLog {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        let gate = self.hold.lock().unwrap().clone();
        if let Some(gate) = gate {
            let notified = gate.notified();
            // Re-check after registering, so a release in between is not missed.
            if self.hold.lock().unwrap().is_some() {
                notified.await;
            }
        }
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(LogError::Io(Arc::new(std::io::Error::other(
                "No space left on device (injected)",
            ))));
        }
        let partial = self.deliver_only.lock().unwrap().take();
        if let Some(delivered) = partial {
            let kept: Vec<u8> = batch
                .events
                .split_inclusive(|b| *b == b'\n')
                .zip(&delivered)
                .filter(|(_, keep)| **keep)
                .flat_map(|(line, _)| line.iter().copied())
                .collect();
            self.inner
                .append(AppendBatch {
                    events: kept,
                    ..AppendBatch::default()
                })
                .await?;
            return Err(LogError::Delivery {
                delivered_events: delivered.into(),
                kind: "timed_out",
                reason: "injected partial delivery".into(),
            });
        }
        self.inner.append(batch).await
    }

    fn ready(&self) -> bool {
        self.fail_next.load(Ordering::SeqCst) == 0 && self.inner.ready()
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// Starts the real binary on loopback port 0 with `--data-dir data` and `extra`
/// arguments, and returns it with its public address once it logged that it is ready.
pub fn spawn_binary(data: &Path, extra: &[&str]) -> (std::process::Child, String) {
    spawn_binary_with_env(data, extra, &[])
}

/// [`spawn_binary`] with extra environment variables.
pub fn spawn_binary_with_env(
    data: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-collector"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("TOLLGATE_SCHEMAS__DIR", schemas_dir())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the collector binary starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the collector logs its address")
            .unwrap();
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "tollgate-collector ready" {
            break entry["fields"]["listen"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Eight clients send 5-event batches to the binary at `addr`; after 200 answered
/// batches it gets SIGTERM. Waits for the clients (each stops at its first refusal) and
/// for the process, asserts it exited 0, and returns the event ids it acknowledged.
pub async fn load_then_sigterm(mut child: std::process::Child, addr: &str) -> Vec<String> {
    let url = format!("http://{addr}/v1/events");
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(tokio::sync::Semaphore::new(0));
    let mut clients = Vec::new();
    for client_no in 0..8 {
        let (url, acknowledged, answered) = (url.clone(), acknowledged.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            // Bounded: each client stops at the first refusal or after 2000 batches.
            for n in 0..2000 {
                let ids: Vec<String> = (0..5).map(|i| format!("c{client_no}-b{n}-e{i}")).collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let sent = client
                    .post(&url)
                    .basic_auth(DEV_KEY, Some(""))
                    .json(&batch(&refs))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 200 {
                    break;
                }
                let body: Value = response.json().await.unwrap();
                for result in body["results"].as_array().unwrap() {
                    if result["status"] == "accepted" {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(result["event_id"].as_str().unwrap().to_owned());
                    }
                }
                answered.add_permits(1);
            }
        }));
    }
    // Load is flowing: 200 batches answered. Now SIGTERM.
    answered.acquire_many(200).await.unwrap().forget();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for client in clients {
        tokio::time::timeout(std::time::Duration::from_secs(60), client)
            .await
            .unwrap()
            .unwrap();
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "the collector exits 0 after draining: {exit:?}"
    );
    std::mem::take(&mut *acknowledged.lock().unwrap())
}

/// Asserts that every acknowledged event id is among `logged` exactly once, and that no
/// logged id appears twice.
pub fn assert_logged_exactly_once<'a>(
    acknowledged: &[String],
    logged: impl IntoIterator<Item = &'a str>,
) {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for id in logged {
        *counts.entry(id).or_default() += 1;
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are missing, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "logged twice: {doubled:?}");
}
