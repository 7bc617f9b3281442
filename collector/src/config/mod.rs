//! Collector configuration: one TOML file, every key overridable from the environment.
//!
//! Each component owns its section, with its defaults and its own checks:
//! [`ServerConfig`] and [`LimitsConfig`] in `http`, [`LogConfig`] in `sink`,
//! [`IdempotencyConfig`] in `dedupe`, [`PrivacySettings`] in `privacy`,
//! [`TelemetryConfig`] in `telemetry`, [`SchemasConfig`] in `schema`, [`TimeConfig`] in
//! `ingest`. This module composes them, reads the file, and checks the rules that span
//! sections.
//!
//! The `///` docs on each field are the user-facing reference (see `config/collector.toml`
//! and `docs/configuration.md`). Values are typed so that bad ones cannot be represented:
//! addresses are `SocketAddr`, durations humantime (`"30s"`), sizes byte sizes (`"1MiB"`).
//!
//! Loading is two steps: [`Config::load`] parses (file, then `TOLLGATE_*` environment
//! variables), and [`Config::validate`] checks the relations between values and returns
//! every problem at once, each naming its key.

pub(crate) mod nets;
mod sources;

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::dedupe::config::{
    FailurePolicy, IdempotencyBackend, IdempotencyConfig, RedisConfig,
};
pub use crate::http::config::{LimitsConfig, ServerConfig, TlsConfig};
pub use crate::ingest::config::TimeConfig;
pub use crate::privacy::settings::PrivacySettings;
pub use crate::rules::ReloadConfig;
pub use crate::schema::config::SchemasConfig;
pub use crate::sink::config::{Compression, KafkaConfig, LogConfig, SinkKind};
pub use crate::telemetry::config::TelemetryConfig;
pub use nets::parse_net;
pub use sources::{RateLimitConfig, SourceConfig};

/// Prefix of environment overrides: `TOLLGATE_SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "TOLLGATE_";

/// The write key of the embedded development source: anyone can guess it.
pub const DEV_WRITE_KEY: &str = "dev";

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
    pub reload: ReloadConfig,
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
            reload: ReloadConfig::default(),
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
    #[error("{key}: {}: {source}", path.display())]
    Read {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// What a check found wrong, each problem prefixed with its key.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn add(&mut self, key: &str, message: impl std::fmt::Display) {
        self.0.push(format!("{key}: {message}"));
    }

    /// `Ok` when nothing was found, else every problem.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

impl Config {
    /// The embedded default: what `tollgate-collector` runs with when given no file. One
    /// local-only source, `dev` (write key `dev`, which PostHog SDKs send as their API
    /// key), that also accepts unregistered events and Snowplow traffic of any app id.
    pub fn embedded() -> Config {
        Config {
            sources: vec![SourceConfig {
                id: "dev".into(),
                write_keys: vec![DEV_WRITE_KEY.into()],
                app_ids: vec!["*".into()],
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
            // The shadow proxy's variables share the prefix; they are not ours.
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .filter(|key| {
                        !key.as_str()
                            .to_ascii_lowercase()
                            .starts_with("shadow_proxy_")
                    })
                    .split("__"),
            )
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
        sources::read_write_key_files(&mut self.sources)
    }

    /// Checks every section, then the rules between sections, and returns every
    /// problem, each with its key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing all problems found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        sources::check(
            &self.sources,
            self.limits.max_events_per_batch.get(),
            &mut problems,
        );
        self.server.check(&mut problems);
        self.limits.check(&mut problems);
        self.log.check(&mut problems);
        self.idempotency.check(&mut problems);
        self.telemetry.check(&mut problems);
        self.check_across(&mut problems);
        problems.into_result()
    }

    /// The rules that relate one section to another.
    fn check_across(&self, problems: &mut Problems) {
        let request_timeout = self.server.request_timeout;
        if sources::has_dev_key(&self.sources)
            && !self.server.listen.ip().is_loopback()
            && !self.server.expose_dev_source
        {
            problems.add(
                "server.listen",
                format!(
                    "{} is reachable from the network, and the write key {DEV_WRITE_KEY:?} (the embedded development source, which anyone can guess) is configured: give a --config with your own [[sources]], or pass --expose-dev-source (server.expose_dev_source = true) to serve it anyway",
                    self.server.listen
                ),
            );
        }
        if self.platforms.is_empty() {
            problems.add("platforms", "list at least one platform");
        }
        for p in &self.platforms {
            if !tollgate_event::event::is_snake_case(p) {
                problems.add("platforms", format!("{p:?} must be snake_case"));
            }
        }
        if self.default_region.is_empty() {
            problems.add("default_region", "must not be empty");
        }
        // librdkafka checks message timeouts about once a second: leave that much room
        // so that the request gets the precise answer, not request_timeout.
        let delivery = self.log.kafka.delivery_timeout;
        if self.log.sink == SinkKind::Kafka
            && (delivery.is_zero() || delivery + Duration::from_secs(1) >= request_timeout)
        {
            problems.add(
                "log.kafka.delivery_timeout",
                "must be above 0 and at least 1s below server.request_timeout",
            );
        }
        let idem = &self.idempotency;
        if idem.claim_ttl <= request_timeout {
            problems.add(
                "idempotency.claim_ttl",
                "must be longer than server.request_timeout, or claims expire while their events are written",
            );
        }
        if idem.backend == IdempotencyBackend::Redis
            && idem.redis.command_timeout >= request_timeout
        {
            problems.add(
                "idempotency.redis.command_timeout",
                "must be shorter than server.request_timeout",
            );
        }
        let max_decompressed = self.limits.max_decompressed;
        if self.log.segment_max_bytes < max_decompressed {
            problems.add(
                "log.segment_max_bytes",
                "must be at least limits.max_decompressed",
            );
        }
        if self.log.max_group_bytes < max_decompressed {
            problems.add(
                "log.max_group_bytes",
                "must be at least limits.max_decompressed",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytesize::ByteSize;

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
        c.log.kafka.brokers = " ".into();
        c.log.kafka.delivery_timeout = c.server.request_timeout;
        c.validate().unwrap();
        c.log.sink = SinkKind::Kafka;
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected validation problems")
        };
        assert!(problems.iter().any(|p| p.starts_with("log.kafka.brokers")));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("log.kafka.delivery_timeout"))
        );
        c.log.kafka.brokers = "127.0.0.1:9092".into();
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
    fn snowplow_app_ids_belong_to_one_source_each() {
        let mut c = Config::embedded();
        // A Snowplow-only source: app ids, no write key.
        let mut apps = c.sources[0].clone();
        apps.id = "shop_web".into();
        apps.write_keys.clear();
        apps.app_ids = vec!["shop-web".into()];
        c.sources.push(apps.clone());
        c.validate().unwrap();
        // The same app id twice, "*" twice, and a source with neither keys nor app ids.
        apps.id = "shop_web_again".into();
        apps.app_ids = vec!["shop-web".into(), "*".into()];
        c.sources.push(apps.clone());
        apps.id = "nothing".into();
        apps.app_ids.clear();
        c.sources.push(apps);
        let Err(ConfigError::Invalid(problems)) = c.validate() else {
            panic!()
        };
        let text = problems.join("\n");
        assert!(
            text.contains("sources[2].app_ids: \"shop-web\" is bound to two sources"),
            "{text}"
        );
        assert!(
            text.contains("sources[2].app_ids: \"*\" is bound to two sources"),
            "{text}"
        );
        assert!(text.contains("sources[3].write_keys"), "{text}");
    }

    #[test]
    fn an_unknown_kafka_compression_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[log.kafka]\ncompression = \"brotli\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("compression") && err.contains("brotli"),
            "{err}"
        );
        std::fs::write(&path, "[log.kafka]\ncompression = \"zstd\"\n").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.log.kafka.compression, Compression::Zstd);
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
