//! A real Kafka-protocol broker for the tests: `tansu` on a free loopback port with
//! in-memory storage, in its own process; optionally reached through a [`TcpProxy`]
//! that the test can cut, to make the broker unreachable without losing its state (a
//! restarted memory broker forgets the producer ids it handed out, which no real
//! cluster does).
//!
//! The broker binary is found through `TOLLGATE_TANSU`, then
//! `$HOME/.cache/tollgate/tansu/bin/tansu` (where `.ci/run` installs it), then `PATH`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct KafkaBroker {
    /// Where the broker listens.
    pub port: u16,
    /// What it tells clients to connect to (a proxy's port, or `port`).
    advertised: u16,
    child: Option<Child>,
    /// The broker's working directory: empty, so no `.env` file is picked up.
    dir: TempDir,
}

/// The `tansu` binary.
pub fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("TOLLGATE_TANSU") {
        return path.into();
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cached = PathBuf::from(home).join(".cache/tollgate/tansu/bin/tansu");
        if cached.exists() {
            return cached;
        }
    }
    PathBuf::from("tansu")
}

impl KafkaBroker {
    /// Starts a broker on a free port.
    ///
    /// # Panics
    /// When `tansu` is not installed (`.ci/run` installs it) or does not listen.
    pub fn start() -> KafkaBroker {
        Self::start_advertising(None)
    }

    /// Starts a broker that tells clients to connect to `advertised` (a proxy in front
    /// of it) instead of its own port.
    pub fn start_advertising(advertised: Option<u16>) -> KafkaBroker {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut broker = KafkaBroker {
                port,
                advertised: advertised.unwrap_or(port),
                child: None,
                dir: tempfile::tempdir().unwrap(),
            };
            if broker.spawn() {
                return broker;
            }
        }
        panic!(
            "the Kafka test broker did not start; is {:?} installed?",
            tansu()
        );
    }

    /// `127.0.0.1:PORT` (the advertised port), for `bootstrap.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    fn spawn(&mut self) -> bool {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .current_dir(self.dir.path())
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(child) = &mut self.child
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// Creates a topic (topics are not auto-created).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), name])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("tansu runs");
        assert!(status.success(), "creating topic {name} failed");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP forwarder the test can cut: while cut, it drops every open
/// connection and refuses new ones, as an unreachable broker would.
pub struct TcpProxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Binds a free loopback port; forward with [`TcpProxy::forward_to`].
    pub async fn bind() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// Forwards every connection accepted on `listener` to `127.0.0.1:upstream`.
    pub fn forward_to(listener: tokio::net::TcpListener, upstream: u16) -> TcpProxy {
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (open, connections) = (open.clone(), connections.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection closed
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            }
        });
        TcpProxy {
            port,
            open,
            connections,
            accept,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
