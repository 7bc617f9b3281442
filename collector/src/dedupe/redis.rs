//! The shared idempotency store: Redis (single node, TLS, unix socket, or Cluster).
//!
//! Every collector replica claims and commits in the same Redis, so a retry that lands
//! on another replica is still recognised. Each operation is ONE round trip for the
//! whole request: a pipeline of one command per key.
//!
//! # Keys and values
//! `<prefix>:<source>:<event_id>` holds `p:<token>` while a request writes the event
//! (TTL: the claim TTL) and `d` once it is logged (TTL: the dedupe window). Keys carry
//! no hash tag, so in a Cluster they spread over all slots.
//!
//! - claim: `SET key p:<token> NX PX <claim_ttl> GET` (Redis ≥ 7.0): nil means claimed,
//!   `d` duplicate, another `p:…` in flight;
//! - commit: `SET key d PX <window>`;
//! - release: a one-key script deletes the key only if it still holds our token, so a
//!   late release never deletes someone else's claim.
//!
//! A single server gets one pipeline per operation; a Cluster gets the same commands
//! sent concurrently over its multiplexed node connections (a cluster pipeline may not
//! cross slots), which costs one round trip per node, in parallel. Each command is
//! built in one allocation of its exact size, its key written straight into it.
//!
//! Why not one Lua script per request over all its keys: measured (docs/benchmarks.md),
//! it saves the collector 12 % of its instructions but costs Redis 25 % more CPU per
//! event, and Redis is what every collector shares.
//!
//! Every call is bounded by the command timeout; the connection reconnects by itself
//! (`ConnectionManager`, or the cluster client's own slot refresh).

use std::time::Duration;

use async_trait::async_trait;
use bytes::BufMut;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisWrite, ToRedisArgs, Value};
use tokio::sync::Mutex;

use super::config::IdempotencyConfig;
use super::{ClaimOutcome, IdempotencyStore, OpenError, StoreError, StoreFailure};

/// Deletes KEYS[1] only while it holds ARGV[1] (our claim).
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

const DONE: &str = "d";

/// `<prefix>:<key>`, written straight into the command: no `String` per key.
struct Key<'a>(&'a str, &'a str);

impl Key<'_> {
    fn len(&self) -> usize {
        self.0.len() + 1 + self.1.len()
    }
}

impl ToRedisArgs for Key<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let Key(prefix, key) = self;
        let mut arg = out.bufmut_for_next_arg(self.len());
        arg.put_slice(prefix.as_bytes());
        arg.put_u8(b':');
        arg.put_slice(key.as_bytes());
    }
}

/// `SET <key> <rest…>`, in one allocation of its exact size.
fn set(key: Key<'_>, rest: &[&[u8]]) -> Cmd {
    let size = "SET".len() + key.len() + rest.iter().map(|arg| arg.len()).sum::<usize>();
    let mut command = Cmd::with_capacity(2 + rest.len(), size);
    command.arg("SET").arg(key).arg(rest);
    command
}

/// The bytes of a string reply (`None` for nil or any other type).
fn reply_bytes(reply: &Value) -> Option<&[u8]> {
    match reply {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

/// Where the store connects.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server: `redis://`, `rediss://` (TLS) or `redis+unix://`.
    Single(String),
    /// A Redis Cluster, by seed nodes.
    Cluster(Vec<String>),
}

/// Settings of the Redis store, resolved from `[idempotency]` and
/// `[idempotency.redis]` by [`RedisOptions::from_config`] (the target chosen, the CA
/// file read).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub target: RedisTarget,
    pub key_prefix: String,
    pub claim_ttl: Duration,
    pub dedupe_window: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// PEM root certificate(s) to trust for `rediss://`, instead of the system's.
    pub tls_root_ca: Option<Vec<u8>>,
}

impl RedisOptions {
    /// The options `config` describes.
    ///
    /// # Errors
    /// The CA file cannot be read.
    pub fn from_config(config: &IdempotencyConfig) -> Result<RedisOptions, OpenError> {
        let r = &config.redis;
        let target = if r.cluster_nodes.is_empty() {
            RedisTarget::Single(r.url.clone())
        } else {
            RedisTarget::Cluster(r.cluster_nodes.clone())
        };
        let tls_root_ca = match &r.tls_ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|source| OpenError::CaFile {
                path: path.clone(),
                source,
            })?),
        };
        Ok(RedisOptions {
            target,
            key_prefix: r.key_prefix.clone(),
            claim_ttl: config.claim_ttl,
            dedupe_window: config.dedupe_window,
            connect_timeout: r.connect_timeout,
            command_timeout: r.command_timeout,
            tls_root_ca,
        })
    }
}

enum Connection {
    Single(ConnectionManager),
    /// Connected lazily (the cluster client cannot be created without a live node).
    Cluster(Box<ClusterClient>, Mutex<Option<ClusterConnection>>),
}

/// Idempotency in a Redis shared by every collector.
pub struct RedisStore {
    connection: Connection,
    prefix: String,
    /// Milliseconds, as the argument the commands send.
    claim_ttl_ms: String,
    window_ms: String,
    timeout: Duration,
    /// Stops the background health check when the store is dropped.
    _health: Option<tokio_util::sync::DropGuard>,
}

/// How often an idle connection is checked, so that one broken while nobody used it
/// (Redis restarted) is replaced before a request needs it.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

impl RedisStore {
    /// Creates the store without connecting: the first operation connects, and a Redis
    /// that is down at start-up is handled by the failure policy like any outage.
    ///
    /// # Errors
    /// A URL that cannot be parsed.
    pub fn new(options: RedisOptions) -> Result<RedisStore, redis::RedisError> {
        // rediss:// needs a rustls crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let connection = match &options.target {
            RedisTarget::Single(url) => {
                let client = match &options.tls_root_ca {
                    Some(ca) => redis::Client::build_with_tls(url.as_str(), certificates(ca))?,
                    None => redis::Client::open(url.as_str())?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(options.command_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Connection::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            RedisTarget::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.command_timeout);
                if let Some(ca) = &options.tls_root_ca {
                    builder = builder.certs(certificates(ca));
                }
                let client = builder.build()?;
                Connection::Cluster(Box::new(client), Mutex::new(None))
            }
        };
        let health = match (&connection, tokio::runtime::Handle::try_current()) {
            (Connection::Single(manager), Ok(runtime)) => {
                let token = tokio_util::sync::CancellationToken::new();
                runtime.spawn(health_check(
                    manager.clone(),
                    options.command_timeout,
                    token.clone(),
                ));
                Some(token.drop_guard())
            }
            _ => None,
        };
        Ok(RedisStore {
            connection,
            prefix: options.key_prefix,
            claim_ttl_ms: options.claim_ttl.as_millis().to_string(),
            window_ms: options.dedupe_window.as_millis().to_string(),
            timeout: options.command_timeout,
            _health: health,
        })
    }

    /// Request-level answers live apart from event keys: `<prefix>:req:<source>:<key>`.
    fn response_key(&self, key: &str) -> String {
        format!("{}:req:{}", self.prefix, key)
    }

    /// Runs the commands as one round trip (per node) within the command timeout, and
    /// returns one reply per command.
    async fn run(
        &self,
        operation: &'static str,
        commands: Vec<Cmd>,
    ) -> Result<Vec<Value>, StoreError> {
        // Nothing to send is no round trip (an empty pipeline is an error to Redis).
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let count = commands.len();
        let work = async {
            match &self.connection {
                Connection::Single(manager) => {
                    let mut pipe = redis::Pipeline::with_capacity(count);
                    for command in commands {
                        pipe.add_command(command);
                    }
                    match pipe.query_async::<Vec<Value>>(&mut manager.clone()).await {
                        // A connection found broken (Redis restarted since it was
                        // last used) is replaced by the manager; every operation
                        // here is safe to send twice (a claim that did land on the
                        // first try reads back our own token), so try once more.
                        Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                            tracing::debug!(error = %e, operation, "Redis connection broken; retrying once");
                            pipe.query_async::<Vec<Value>>(&mut manager.clone()).await
                        }
                        result => result,
                    }
                }
                Connection::Cluster(client, cached) => {
                    let connection = {
                        let mut cached = cached.lock().await;
                        match cached.as_ref() {
                            Some(c) => c.clone(),
                            None => {
                                let c = client.get_async_connection().await?;
                                *cached = Some(c.clone());
                                c
                            }
                        }
                    };
                    futures_util::future::try_join_all(commands.iter().map(|command| {
                        let mut connection = connection.clone();
                        async move { command.query_async::<Value>(&mut connection).await }
                    }))
                    .await
                }
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(values)) if values.len() == count => Ok(values),
            Ok(Ok(values)) => Err(StoreError::new(
                operation,
                StoreFailure::Reply(format!("{} replies for {count} commands", values.len())),
            )),
            Ok(Err(e)) => Err(StoreError::new(operation, e)),
            Err(_) => Err(StoreError::new(
                operation,
                StoreFailure::TimedOut(self.timeout),
            )),
        }
    }
}

/// PINGs the connection every [`HEALTH_INTERVAL`] while the store lives: a ping on a
/// broken connection makes the manager reconnect in the background.
async fn health_check(
    manager: ConnectionManager,
    timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let (ping, mut connection) = (redis::cmd("PING"), manager.clone());
        let answer = ping.query_async::<Value>(&mut connection);
        if let Ok(Err(e)) = tokio::time::timeout(timeout, answer).await {
            tracing::debug!(error = %e, "Redis health check failed; reconnecting");
        }
    }
}

fn certificates(root_ca: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_ca.to_vec()),
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(&self, keys: &[String], token: &str) -> Result<Vec<ClaimOutcome>, StoreError> {
        let pending = format!("p:{token}");
        let commands = keys
            .iter()
            .map(|key| {
                let ttl = self.claim_ttl_ms.as_bytes();
                let rest: [&[u8]; 5] = [pending.as_bytes(), b"NX", b"PX", ttl, b"GET"];
                set(Key(&self.prefix, key), &rest)
            })
            .collect();
        self.run("claim", commands)
            .await?
            .iter()
            .map(|reply| match (reply, reply_bytes(reply)) {
                (Value::Nil, _) => Ok(ClaimOutcome::Claimed),
                // Our own claim, from a first try whose reply was lost.
                (_, Some(value)) if value == pending.as_bytes() => Ok(ClaimOutcome::Claimed),
                (_, Some(value)) if value == DONE.as_bytes() => Ok(ClaimOutcome::Duplicate),
                (_, Some(_)) => Ok(ClaimOutcome::InFlight),
                (other, None) => Err(StoreError::new(
                    "claim",
                    StoreFailure::Reply(format!("{other:?}")),
                )),
            })
            .collect()
    }

    async fn commit(&self, keys: &[String], _token: &str) -> Result<(), StoreError> {
        let commands = keys
            .iter()
            .map(|key| {
                let rest: [&[u8]; 3] = [DONE.as_bytes(), b"PX", self.window_ms.as_bytes()];
                set(Key(&self.prefix, key), &rest)
            })
            .collect();
        self.run("commit", commands).await.map(drop)
    }

    async fn release(&self, keys: &[String], token: &str) -> Result<(), StoreError> {
        let pending = format!("p:{token}");
        let commands = keys
            .iter()
            .map(|key| {
                // EVAL (not EVALSHA): a restarted Redis has no script cache, and
                // releases are rare, so sending the short script text is the robust
                // choice. One key per call, so it routes in a Cluster too.
                let mut command = redis::cmd("EVAL");
                command
                    .arg(RELEASE)
                    .arg(1)
                    .arg(Key(&self.prefix, key))
                    .arg(&pending);
                command
            })
            .collect();
        self.run("release", commands).await.map(drop)
    }

    async fn recall(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.response_key(key));
        let reply = self.run("recall", vec![command]).await?.pop();
        redis::from_redis_value::<Option<Vec<u8>>>(reply.unwrap_or(Value::Nil))
            .map_err(|e| StoreError::new("recall", e))
    }

    async fn remember(&self, key: &str, answer: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut command = redis::cmd("SET");
        command
            .arg(self.response_key(key))
            .arg(answer)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        self.run("remember", vec![command]).await.map(drop)
    }

    async fn ready(&self) -> bool {
        self.run("ping", vec![redis::cmd("PING")]).await.is_ok()
    }

    fn name(&self) -> &'static str {
        match self.connection {
            Connection::Single(_) => "redis",
            Connection::Cluster(..) => "redis_cluster",
        }
    }

    fn is_remote(&self) -> bool {
        true
    }
}
