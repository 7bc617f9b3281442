//! A real `redis-server` for the tests: its own process on a free loopback port, its
//! own temp dir, nothing persisted, and killable (and restartable on the same port) for
//! fault tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    /// Extra `redis-server` arguments (cluster mode, TLS, unix socket).
    extra: Vec<String>,
    /// The port speaks TLS only: readiness is a TCP connect, not a PING.
    tls: bool,
}

impl RedisServer {
    /// Starts a server on a free port.
    ///
    /// # Panics
    /// When `redis-server` is not installed (`.ci/run` installs it) or does not answer.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::launch(false, |_| extra.clone())
            .unwrap_or_else(|log| panic!("redis-server did not start (is it installed?): {log}"))
    }

    /// Starts `redis-server` on a free port with the arguments `args(port)` gives, and
    /// returns its log when it would not start.
    fn launch(tls: bool, args: impl Fn(u16) -> Vec<String>) -> Result<RedisServer, String> {
        // Pick a free port: bind port 0, read it, release it. redis-server 7 treats
        // `--port 0` as "no TCP", so it cannot pick one itself; a lost race is retried.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut server = RedisServer {
                port,
                child: None,
                dir: tempfile::tempdir().unwrap(),
                extra: args(port),
                tls,
            };
            if server.spawn() {
                return Ok(server);
            }
            last_log =
                std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default();
        }
        Err(last_log)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A server that speaks only TLS on its port, with a certificate for 127.0.0.1
    /// signed by a CA made for the test. Returns the server and the CA's PEM.
    pub fn start_tls() -> (RedisServer, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(path("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(path("key.pem"), leaf_key.serialize_pem()).unwrap();
        let server = Self::launch(true, |port| {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path("cert.pem"),
                "--tls-key-file".into(),
                path("key.pem"),
                "--tls-ca-cert-file".into(),
                path("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })
        .unwrap_or_else(|log| panic!("redis-server with TLS did not start: {log}"));
        let ca = std::fs::read(path("ca.pem")).unwrap();
        // The certificates' folder goes with the server.
        std::mem::forget(dir);
        (server, ca)
    }

    /// A server that also listens on a unix socket; returns its `redis+unix://` URL.
    pub fn start_unix() -> (RedisServer, String) {
        let socket_dir = tempfile::tempdir().unwrap();
        let socket = socket_dir
            .path()
            .join("redis.sock")
            .to_string_lossy()
            .into_owned();
        let server = RedisServer::start_with(&["--unixsocket", &socket, "--unixsocketperm", "700"]);
        std::mem::forget(socket_dir);
        (server, format!("redis+unix://{socket}"))
    }

    fn spawn(&mut self) -> bool {
        // Later arguments win, so `extra` may replace the plain port (TLS).
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited: port taken
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// True when the server answers PING (a TLS server: accepts a connection).
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    /// Makes the server stop answering for `seconds` (`DEBUG SLEEP`; the server must
    /// run with `--enable-debug-command yes`) and returns once it no longer answers.
    /// Commands sent meanwhile run when it wakes.
    pub fn sleep(&self, seconds: u32) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .write_all(format!("DEBUG SLEEP {seconds}\r\n").as_bytes())
            .unwrap();
        // Held open until the reply, so the sleep is not cut short by a closed client.
        std::thread::spawn(move || {
            let mut reply = [0u8; 5];
            let _ = stream.read_exact(&mut reply);
        });
        assert!(!self.ping(), "Redis is asleep");
    }

    /// Kills the server (SIGKILL): an outage, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (nothing was persisted).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not come back on port {}",
            self.port
        );
    }

    /// Runs one command with redis-cli-like inline syntax and returns the raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters on loopback, created with `redis-cli --cluster`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed with redis-server");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.command("CLUSTER INFO").contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Keys held by each node.
    pub fn keys_per_node(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| {
                let reply = n.command("DBSIZE");
                reply.trim().trim_start_matches(':').parse().unwrap()
            })
            .collect()
    }
}
