//! Collector configuration: one TOML file, every key overridable from the environment.
//!
//! The `///` docs on each field are the user-facing reference (see `config/collector.toml`
//! and `docs/configuration.md`). Values are typed so that bad ones cannot be represented:
//! addresses are `SocketAddr`, durations humantime (`"30s"`), sizes byte sizes (`"1MiB"`).
//!
//! Loading is two steps: [`Config::load`] parses (file, then `TOLLGATE_*` environment
//! variables), and [`Config::validate`] checks the relations between values and returns
//! every problem at once, each naming its key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides: `TOLLGATE_SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "TOLLGATE_";

/// The whole collector configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub time: TimeConfig,
    pub schemas: SchemasConfig,
    pub log: LogConfig,
    pub idempotency: IdempotencyConfig,
    pub privacy: PrivacySettings,
    pub telemetry: TelemetryConfig,
    /// Platforms accepted in the native API's `platform` field.
    pub platforms: Vec<String>,
    /// Region stamped on records (per-region privacy policies refine this).
    pub default_region: String,
    /// Who may send events. A config file must declare at least one source.
    pub sources: Vec<SourceConfig>,
}

/// Metrics labels and trace export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Per-event data-quality metrics (segments, missing fields, lateness, skew);
    /// `false` keeps only the request-level metrics.
    pub data_quality: bool,
    /// App versions with their own label in the data-quality metrics (the most frequent
    /// of the last minute); the rest are `other`.
    pub app_version_labels: usize,
    /// OTLP/HTTP endpoint traces are exported to (e.g. `http://otel-collector:4318`);
    /// unset: no trace export.
    pub otlp_endpoint: Option<String>,
    /// Share of requests traced when exporting (0 to 1).
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            data_quality: true,
            app_version_labels: 20,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
        }
    }
}

/// The HTTP listeners and the request path around the handlers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the public ingest listener (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`); keep it private.
    pub admin_listen: Option<SocketAddr>,
    /// Longest a request may take, body upload included, before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests processed at once; beyond this the collector sheds load with 503.
    pub max_concurrent_requests: NonZeroUsize,
    /// On SIGTERM, how long in-flight requests may take to finish before the log is
    /// flushed and the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Serve the public listener over TLS (HTTP/2 and HTTP/1.1 by ALPN). Unset: plain
    /// HTTP, for local use or behind a TLS-terminating load balancer.
    pub tls: Option<TlsConfig>,
    /// Load balancers and proxies (CIDR or address) whose `X-Forwarded-For` names the
    /// client, for per-IP rate limits. Anyone else's header is ignored.
    #[serde(with = "nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Most client IPs tracked by per-IP rate limits; entries back to a full budget
    /// are pruned, and past this new addresses are not limited per IP until there is
    /// room (the source's own limits still apply).
    pub max_tracked_ips: NonZeroUsize,
    /// Longest a client may take to send a request's headers before its connection is
    /// closed (slow-header attacks).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves in either direction for this long (an idle
    /// keep-alive connection, a client that stopped reading its answer) is closed.
    /// Must exceed `request_timeout`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most connections open at once on each listener; past this, new connections
    /// wait in the kernel's accept backlog.
    pub max_connections: NonZeroUsize,
    /// Shadow proxies (CIDR or address) whose `X-Tollgate-Shadow: 1` is believed: their
    /// copies are logged to the shadow stream. Anyone else's header is ignored (the
    /// events are logged as real traffic). Default: nobody, loopback included.
    #[serde(with = "nets")]
    pub shadow_proxies: Vec<ipnet::IpNet>,
    /// Serve the embedded `dev` source (write key `dev`, unregistered events accepted)
    /// on a non-loopback address. Off: the collector refuses to start that way.
    pub expose_dev_source: bool,
}

/// The write key of the embedded development source: anyone can guess it.
pub const DEV_WRITE_KEY: &str = "dev";

/// A source's rate limits (GCRA). Each is off unless its rate is set; a burst defaults
/// to one second of its rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second of the whole source (all its write keys, all clients).
    pub requests_per_second: Option<NonZeroU32>,
    pub request_burst: Option<NonZeroU32>,
    /// Events per second of the whole source; a batch counts all its events.
    pub events_per_second: Option<NonZeroU32>,
    /// At least `limits.max_events_per_batch`, so that any accepted batch can pass.
    pub event_burst: Option<NonZeroU32>,
    /// Requests per second of each client IP sending with this source's keys.
    pub ip_requests_per_second: Option<NonZeroU32>,
    pub ip_request_burst: Option<NonZeroU32>,
}

/// TLS on the public listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// How often the files are checked for a renewed certificate (SIGHUP reloads at
    /// once). Open connections are never dropped by a reload.
    #[serde(with = "humantime_serde", default = "default_tls_reload")]
    pub reload_interval: Duration,
}

fn default_tls_reload() -> Duration {
    Duration::from_secs(10)
}

/// Size limits on what clients send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body on the wire (compressed size when gzipped). Larger: 413.
    pub max_body: ByteSize,
    /// Largest body after gzip decompression. Larger: 413.
    pub max_decompressed: ByteSize,
    /// Largest decompressed/compressed ratio accepted (gzip bombs get 413).
    pub max_gzip_ratio: NonZeroU32,
    /// Largest single event (its JSON text). Larger: that event is rejected.
    pub max_event: ByteSize,
    /// Most events in one request. More: 413.
    pub max_events_per_batch: NonZeroUsize,
    /// Bytes all requests in flight may hold at once: each reserves its body on the
    /// wire (or `max_body` when the length is not declared), then twice its
    /// decompressed size (the decoded events and the records waiting for the log).
    /// Past it a request gets 503 `memory_budget_exceeded` with `Retry-After`, so
    /// memory stays bounded under any load instead of the process being killed.
    pub max_in_flight_bytes: ByteSize,
}

/// How event time is judged against server time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// Events whose skew-corrected time is older than this are stamped `arrival: late`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Events ahead of the server by more than this are stamped `arrival: future`.
    #[serde(with = "humantime_serde")]
    pub future_tolerance: Duration,
}

/// Where the versioned JSON Schemas live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemasConfig {
    /// Folder holding `<event_name>/v<N>.json`; relative paths are from the working
    /// directory.
    pub dir: PathBuf,
}

/// Where the regional privacy policies come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Policy file (see `config/privacy.toml`). With the default path and no such file,
    /// the collector runs without a privacy policy and says so at start-up; any other
    /// path must exist. `none` disables privacy policies explicitly.
    pub file: PathBuf,
    /// The pseudonym key, in place of the policy file's `[hmac].current`: `{ id = "…",
    /// file = "…" }` or `{ id = "…", env = "…" }`. Every replica must use the same key
    /// (e.g. one Kubernetes Secret), else their pseudonyms differ.
    pub hmac_key: Option<crate::privacy::config::KeyConfig>,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        PrivacySettings {
            file: PathBuf::from("config/privacy.toml"),
            hmac_key: None,
        }
    }
}

/// The local durable log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Data directory: accepted events go to `events/`, rejected ones to `quarantine/`.
    pub data_dir: PathBuf,
    /// File sink: requests copied here by a shadow proxy (`X-Tollgate-Shadow: 1`) are
    /// logged under this directory instead, apart from real traffic (the Kafka sink has
    /// `log.kafka.shadow_topic`). Unset: logged with everything else, counted apart.
    #[serde(default)]
    pub shadow_data_dir: Option<PathBuf>,
    /// A segment file is closed and a new one started past this size.
    pub segment_max_bytes: ByteSize,
    /// A segment file is closed and a new one started at the first write past this age.
    #[serde(with = "humantime_serde")]
    pub segment_max_age: Duration,
    /// Requests waiting for the log writer; when full, requests get 503 + Retry-After.
    pub queue_capacity: NonZeroUsize,
    /// Most bytes one group commit (one fsync) covers.
    pub max_group_bytes: ByteSize,
    /// Under concurrent traffic, how long the writer gathers requests before one group
    /// commit (one fsync). Trades that much latency for fewer fsyncs; `0s` disables.
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
    /// Where records go: `file` (the local log above) or `kafka` (see `[log.kafka]`).
    pub sink: SinkKind,
    /// Settings of the `kafka` sink.
    pub kafka: KafkaConfig,
}

/// Which log the collector appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Local NDJSON segment files under `data_dir`, fsynced: one machine.
    File,
    /// A Kafka-compatible broker, acknowledged with `acks=all`: many collectors.
    Kafka,
}

/// The Kafka sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic of accepted events.
    pub topic: String,
    /// Topic of rejected events, with their reason.
    pub quarantine_topic: String,
    /// Topic for requests from a shadow proxy (`X-Tollgate-Shadow: 1`), accepted and
    /// rejected alike; unset: the same topics as other traffic.
    pub shadow_topic: Option<String>,
    /// Field that keys each message, so one user's events stay in order in one
    /// partition: `user_id` (falls back to `device_id`), `device_id`, `session_id`,
    /// `event_id`.
    pub key: crate::sink::PartitionKey,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long the producer waits to fill a batch (`linger.ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Most bytes in one produce batch (`batch.size`).
    pub batch_size: ByteSize,
    /// Messages queued or in flight before requests get 503 at once
    /// (`queue.buffering.max.messages`).
    pub queue_max_messages: NonZeroUsize,
    /// How long one message may take to be acknowledged, retries included
    /// (`message.timeout.ms`); past it the request gets 503.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Further librdkafka properties, e.g. `"security.protocol" = "SASL_SSL"`.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "tollgate.events".into(),
            quarantine_topic: "tollgate.quarantine".into(),
            shadow_topic: None,
            key: crate::sink::PartitionKey::UserId,
            compression: "lz4".into(),
            linger: Duration::from_millis(5),
            batch_size: ByteSize::mib(1),
            queue_max_messages: NonZeroUsize::new(100_000).unwrap(),
            delivery_timeout: Duration::from_secs(5),
            properties: Default::default(),
        }
    }
}

/// What happens when the idempotency store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Accept the events, stamp them `dedupe: unchecked` and count them.
    FailOpen,
    /// Answer 503 with Retry-After; the client retries later.
    FailClosed,
}

/// Which idempotency store backs the claim/commit protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdempotencyBackend {
    /// In-process, bounded: right for one collector; replicas do not share it.
    Memory,
    /// Redis (or Redis Cluster), shared by every replica: see `[idempotency.redis]`.
    Redis,
}

/// The shared Redis store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB`, `rediss://…` (TLS) or `redis+unix:///path/redis.sock`.
    pub url: String,
    /// Redis Cluster seed nodes (`redis://HOST:PORT`); when set, `url` is not used.
    pub cluster_nodes: Vec<String>,
    /// PEM file of the CA that signed the Redis server's certificate, for `rediss://`
    /// with a private CA (else the system's roots are used).
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key: `<prefix>:<source>:<event_id>`.
    pub key_prefix: String,
    /// Longest wait to (re)connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for one round trip; past it the failure policy applies.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            tls_ca_file: None,
            key_prefix: "tollgate".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(250),
        }
    }
}

/// Idempotency: `event_id`s seen within the window are answered `duplicate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    pub backend: IdempotencyBackend,
    /// How long an accepted `event_id` is remembered.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// How long a claim lives while its events are being written; bounds how long a
    /// crashed writer blocks a retry.
    #[serde(with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// Memory backend: most keys kept (≈ 40 bytes each). Past it the least recently
    /// used are forgotten early (counted in `tollgate_idempotency_evictions_total`).
    pub max_keys: NonZeroU64,
    /// What to do when the store cannot answer.
    pub on_store_error: FailurePolicy,
    /// Settings of the `redis` backend.
    pub redis: RedisConfig,
}

/// A source: one app or service that sends events with its own write key(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Stamped on every record as `source` (the write key never is).
    pub id: String,
    /// Keys the SDKs send as the HTTP Basic user. Several allow rotation.
    #[serde(default)]
    pub write_keys: Vec<String>,
    /// A file of further keys, one per line (e.g. a mounted Kubernetes Secret), so
    /// that keys stay out of the configuration file.
    #[serde(default)]
    pub write_keys_file: Option<PathBuf>,
    /// Accept event names without a registered schema (checked against the base event
    /// model only). For development sources.
    #[serde(default)]
    pub allow_unknown_events: bool,
    /// Rate limits; over them requests get 429 with Retry-After.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// A CIDR block, or one address as a /32 or /128.
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: NonZeroUsize::new(2048).unwrap(),
            shutdown_timeout: Duration::from_secs(25),
            tls: None,
            trusted_proxies: Vec::new(),
            max_tracked_ips: NonZeroUsize::new(100_000).unwrap(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: NonZeroUsize::new(10_000).unwrap(),
            shadow_proxies: Vec::new(),
            expose_dev_source: false,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body: ByteSize::mib(1),
            max_decompressed: ByteSize::mib(4),
            max_gzip_ratio: NonZeroU32::new(200).unwrap(),
            max_event: ByteSize::kib(32),
            max_events_per_batch: NonZeroUsize::new(1000).unwrap(),
            max_in_flight_bytes: ByteSize::gib(1),
        }
    }
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            allowed_lateness: Duration::from_secs(24 * 3600),
            future_tolerance: Duration::from_secs(5 * 60),
        }
    }
}

impl Default for SchemasConfig {
    fn default() -> Self {
        SchemasConfig {
            dir: PathBuf::from("config/schemas"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            data_dir: PathBuf::from("data"),
            shadow_data_dir: None,
            segment_max_bytes: ByteSize::mib(128),
            segment_max_age: Duration::from_secs(3600),
            queue_capacity: NonZeroUsize::new(1024).unwrap(),
            max_group_bytes: ByteSize::mib(8),
            commit_delay: Duration::from_millis(1),
            sink: SinkKind::File,
            kafka: KafkaConfig::default(),
        }
    }
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            backend: IdempotencyBackend::Memory,
            dedupe_window: Duration::from_secs(24 * 3600),
            claim_ttl: Duration::from_secs(60),
            max_keys: NonZeroU64::new(2_000_000).unwrap(),
            on_store_error: FailurePolicy::FailClosed,
            redis: RedisConfig::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            limits: LimitsConfig::default(),
            time: TimeConfig::default(),
            schemas: SchemasConfig::default(),
            log: LogConfig::default(),
            idempotency: IdempotencyConfig::default(),
            privacy: PrivacySettings::default(),
            telemetry: TelemetryConfig::default(),
            platforms: ["ios", "android", "web", "server", "desktop", "tv"]
                .map(String::from)
                .to_vec(),
            default_region: "default".into(),
            sources: Vec::new(),
        }
    }
}

/// The configuration could not be read or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// The embedded default: what `tollgate-collector` runs with when given no file. One
    /// local-only source, `dev` (write key `dev`), that also accepts unregistered events.
    pub fn embedded() -> Config {
        Config {
            sources: vec![SourceConfig {
                id: "dev".into(),
                write_keys: vec![DEV_WRITE_KEY.into()],
                allow_unknown_events: true,
                write_keys_file: None,
                rate_limit: RateLimitConfig::default(),
            }],
            ..Config::default()
        }
    }

    /// Reads `file` (or the embedded default when `None`), then applies `TOLLGATE_*`
    /// environment overrides (`__` separates nesting: `TOLLGATE_LOG__DATA_DIR`).
    ///
    /// # Errors
    /// The file is missing, is not TOML, has an unknown key or a value of the wrong type.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let figment = match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::Missing(path.to_owned()));
                }
                Figment::new().merge(Toml::file_exact(path))
            }
            None => Figment::from(Serialized::defaults(Config::embedded())),
        };
        let mut config: Config = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(|e| {
                ConfigError::Parse(
                    e.into_iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
        config.read_write_key_files()?;
        Ok(config)
    }

    /// Adds the keys of every `sources[].write_keys_file` (one per line; blank lines and
    /// `#` comments skipped) to the source's `write_keys`.
    ///
    /// # Errors
    /// A file that cannot be read.
    pub fn read_write_key_files(&mut self) -> Result<(), ConfigError> {
        for (i, source) in self.sources.iter_mut().enumerate() {
            let Some(path) = &source.write_keys_file else {
                continue;
            };
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(vec![format!(
                    "sources[{i}].write_keys_file: {}: {e}",
                    path.display()
                )])
            })?;
            source.write_keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        Ok(())
    }

    /// Checks the relations between values and returns every problem, each with its key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing all problems found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, msg: String| problems.push(format!("{key}: {msg}"));

        if self.sources.is_empty() {
            problem("sources", "declare at least one [[sources]] entry".into());
        }
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            if !tollgate_event::event::is_snake_case(&source.id) {
                problem(
                    &format!("sources[{i}].id"),
                    format!("{:?} must be snake_case", source.id),
                );
            }
            if !ids.insert(&source.id) {
                problem(
                    &format!("sources[{i}].id"),
                    format!("{:?} is declared twice", source.id),
                );
            }
            if source.write_keys.is_empty() {
                problem(
                    &format!("sources[{i}].write_keys"),
                    "give at least one key".into(),
                );
            }
            for key in &source.write_keys {
                if key.is_empty() || key.contains(':') {
                    problem(
                        &format!("sources[{i}].write_keys"),
                        "keys must be non-empty and contain no ':' (they travel as the HTTP Basic user)".into(),
                    );
                } else if !keys.insert(key) {
                    problem(
                        &format!("sources[{i}].write_keys"),
                        "a write key is used by two sources".into(),
                    );
                }
            }
        }
        for (i, source) in self.sources.iter().enumerate() {
            let r = &source.rate_limit;
            let burst = r.event_burst.or(r.events_per_second);
            if let Some(burst) = burst
                && (burst.get() as usize) < self.limits.max_events_per_batch.get()
            {
                problem(
                    &format!("sources[{i}].rate_limit.event_burst"),
                    format!(
                        "{burst} is below limits.max_events_per_batch ({}): a full batch could never pass",
                        self.limits.max_events_per_batch
                    ),
                );
            }
        }
        let dev_source = self
            .sources
            .iter()
            .any(|s| s.write_keys.iter().any(|k| k == DEV_WRITE_KEY));
        if dev_source && !self.server.listen.ip().is_loopback() && !self.server.expose_dev_source {
            problem(
                "server.listen",
                format!(
                    "{} is reachable from the network, and the write key {DEV_WRITE_KEY:?} (the embedded development source, which anyone can guess) is configured: give a --config with your own [[sources]], or pass --expose-dev-source (server.expose_dev_source = true) to serve it anyway",
                    self.server.listen
                ),
            );
        }
        if self.server.idle_timeout <= self.server.request_timeout {
            problem(
                "server.idle_timeout",
                "must be longer than server.request_timeout, or a slow request's connection is cut while it is processed".into(),
            );
        }
        if self.server.header_read_timeout.is_zero() {
            problem("server.header_read_timeout", "must be more than 0s".into());
        }
        if !(0.0..=1.0).contains(&self.telemetry.trace_sample_ratio) {
            problem(
                "telemetry.trace_sample_ratio",
                "must be between 0 and 1".into(),
            );
        }
        if self.platforms.is_empty() {
            problem("platforms", "list at least one platform".into());
        }
        for p in &self.platforms {
            if !tollgate_event::event::is_snake_case(p) {
                problem("platforms", format!("{p:?} must be snake_case"));
            }
        }
        if self.log.sink == SinkKind::Kafka {
            let k = &self.log.kafka;
            if k.brokers.trim().is_empty() {
                problem("log.kafka.brokers", "give at least one host:port".into());
            }
            if k.topic.is_empty() || k.quarantine_topic.is_empty() {
                problem("log.kafka.topic", "topics must not be empty".into());
            }
            if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
                problem(
                    "log.kafka.compression",
                    format!(
                        "{:?} is not one of none, gzip, snappy, lz4, zstd",
                        k.compression
                    ),
                );
            }
            // librdkafka checks message timeouts about once a second: leave that much
            // room so that the request gets the precise answer, not request_timeout.
            if k.delivery_timeout.is_zero()
                || k.delivery_timeout + Duration::from_secs(1) >= self.server.request_timeout
            {
                problem(
                    "log.kafka.delivery_timeout",
                    "must be above 0 and at least 1s below server.request_timeout".into(),
                );
            }
        }
        let l = &self.limits;
        if l.max_event > l.max_decompressed {
            problem(
                "limits.max_event",
                "must not exceed limits.max_decompressed".into(),
            );
        }
        if l.max_in_flight_bytes.as_u64() < l.max_body.as_u64() + 2 * l.max_decompressed.as_u64() {
            problem(
                "limits.max_in_flight_bytes",
                "must hold at least one largest request: max_body + 2 × max_decompressed".into(),
            );
        }
        if l.max_in_flight_bytes.as_u64() > (u64::from(u32::MAX) << 10) {
            problem("limits.max_in_flight_bytes", "must be at most 4 TiB".into());
        }
        if l.max_body > l.max_decompressed {
            problem(
                "limits.max_body",
                "must not exceed limits.max_decompressed".into(),
            );
        }
        let i = &self.idempotency;
        if i.claim_ttl >= i.dedupe_window {
            problem(
                "idempotency.claim_ttl",
                "must be shorter than idempotency.dedupe_window".into(),
            );
        }
        if i.claim_ttl <= self.server.request_timeout {
            problem(
                "idempotency.claim_ttl",
                "must be longer than server.request_timeout, or claims expire while their events are written".into(),
            );
        }
        if i.backend == IdempotencyBackend::Redis {
            let r = &i.redis;
            let urls: Vec<&String> = if r.cluster_nodes.is_empty() {
                vec![&r.url]
            } else {
                r.cluster_nodes.iter().collect()
            };
            for url in urls {
                if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                    problem("idempotency.redis.url", format!("{url:?}: {e}"));
                }
            }
            if let Some(ca) = &r.tls_ca_file
                && !ca.is_file()
            {
                problem(
                    "idempotency.redis.tls_ca_file",
                    format!("{} is not a file", ca.display()),
                );
            }
            if r.key_prefix.is_empty() || r.key_prefix.contains(char::is_whitespace) {
                problem(
                    "idempotency.redis.key_prefix",
                    "must be non-empty, without spaces".into(),
                );
            }
            if r.command_timeout >= self.server.request_timeout {
                problem(
                    "idempotency.redis.command_timeout",
                    "must be shorter than server.request_timeout".into(),
                );
            }
        }
        if self.server.request_timeout.is_zero() {
            problem("server.request_timeout", "must be more than 0s".into());
        }
        if self.log.segment_max_bytes < self.limits.max_decompressed {
            problem(
                "log.segment_max_bytes",
                "must be at least limits.max_decompressed".into(),
            );
        }
        if self.log.max_group_bytes < self.limits.max_decompressed {
            problem(
                "log.max_group_bytes",
                "must be at least limits.max_decompressed".into(),
            );
        }
        if self.default_region.is_empty() {
            problem("default_region", "must not be empty".into());
        }
        if self.server.listen.port() != 0 && Some(self.server.listen) == self.server.admin_listen {
            problem(
                "server.admin_listen",
                "must differ from server.listen".into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Lists of peers (`trusted_proxies`, `shadow_proxies`) as CIDR blocks, written as
/// blocks or plain addresses: parsed once, when the file is read.
pub(crate) mod nets {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(nets: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|text| {
                super::parse_net(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("{text:?} is not an address or CIDR"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_lists_are_parsed_when_the_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("collector.toml");
        let file = |proxies: &str| {
            format!(
                "[server]\nshadow_proxies = [{proxies}]\n[[sources]]\nid = \"app\"\nwrite_keys = [\"k1\"]\n"
            )
        };
        std::fs::write(&path, file(r#""10.0.0.1", "not-a-net""#)).unwrap();
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("not-a-net") && error.contains("shadow_proxies"),
            "{error}"
        );
        std::fs::write(&path, file(r#""10.0.0.1", "192.168.0.0/16""#)).unwrap();
        let config = Config::load(Some(&path)).unwrap();
        let nets: Vec<String> = config
            .server
            .shadow_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.1/32", "192.168.0.0/16"]);
    }

    #[test]
    fn embedded_default_is_valid() {
        Config::embedded().validate().unwrap();
    }

    #[test]
    fn shipped_example_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/collector.toml");
        let config = Config::load(Some(&path)).unwrap();
        config.validate().unwrap();
        assert!(!config.sources.is_empty());
    }

    #[test]
    fn write_keys_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "# rotated 2026-11\nwk_new\n\n  wk_old  \n").unwrap();
        let config_file = dir.path().join("c.toml");
        std::fs::write(
            &config_file,
            format!(
                "[[sources]]\nid = \"app\"\nwrite_keys_file = {:?}\n",
                keys.display().to_string()
            ),
        )
        .unwrap();
        let config = Config::load(Some(&config_file)).unwrap();
        assert_eq!(config.sources[0].write_keys, ["wk_new", "wk_old"]);
        config.validate().unwrap();

        std::fs::remove_file(&keys).unwrap();
        let error = Config::load(Some(&config_file)).unwrap_err().to_string();
        assert!(error.contains("sources[0].write_keys_file"), "{error}");
    }

    #[test]
    fn kafka_settings_are_checked_only_when_kafka_is_the_sink() {
        let mut c = Config::embedded();
        c.log.kafka.compression = "brotli".into();
        c.log.kafka.delivery_timeout = c.server.request_timeout;
        c.validate().unwrap();
        c.log.sink = SinkKind::Kafka;
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected validation problems")
        };
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("log.kafka.compression"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("log.kafka.delivery_timeout"))
        );
        c.log.kafka.compression = "zstd".into();
        c.log.kafka.delivery_timeout = Duration::from_secs(5);
        c.validate().unwrap();
    }

    #[test]
    fn validation_reports_every_problem_with_its_key() {
        let mut c = Config::embedded();
        c.sources.push(c.sources[0].clone());
        c.idempotency.claim_ttl = Duration::from_secs(1);
        c.limits.max_event = ByteSize::mib(64);
        let Err(ConfigError::Invalid(problems)) = c.validate() else {
            panic!()
        };
        let keys: Vec<_> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert!(keys.contains(&"sources[1].id"), "{problems:?}");
        assert!(keys.contains(&"sources[1].write_keys"), "{problems:?}");
        assert!(keys.contains(&"idempotency.claim_ttl"), "{problems:?}");
        assert!(keys.contains(&"limits.max_event"), "{problems:?}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 1\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("lsiten"), "{err}");
        std::fs::write(&path, "[limits]\nmax_body = \"lots\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("max_body"), "{err}");
    }

    #[test]
    fn redis_settings_are_checked_only_when_used() {
        let mut c = Config::embedded();
        c.idempotency.redis.url = "not a url".into();
        c.validate().unwrap();
        c.idempotency.backend = IdempotencyBackend::Redis;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("idempotency.redis.url"), "{err}");
        c.idempotency.redis.url = "redis+unix:///tmp/redis.sock".into();
        c.validate().unwrap();
        c.idempotency.redis.cluster_nodes = vec!["redis://127.0.0.1:7000".into()];
        c.idempotency.redis.command_timeout = Duration::from_secs(30);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("idempotency.redis.command_timeout"), "{err}");
    }

    #[test]
    fn a_file_without_sources_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "default_region = \"eu\"\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.default_region, "eu");
        assert!(c.validate().unwrap_err().to_string().contains("sources"));
    }
}
