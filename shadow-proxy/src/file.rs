//! The proxy's settings, in layers: the defaults, then a TOML file, then
//! `TOLLGATE_SHADOW_PROXY_*` environment variables
//! (`TOLLGATE_SHADOW_PROXY_SAMPLE_RATE=0.1`), then
//! command-line flags; each overrides the one before. The defaults are
//! [`ProxyConfig::default`]'s.
//!
//! ```toml
//! listen = "0.0.0.0:8081"
//! admin_listen = "127.0.0.1:9091"   # /shadow/report, /shadow/report.html, /metrics
//! primary = "http://tollgate-collector:80"
//! shadow = "http://tollgate-collector-shadow:80"
//! replica = "http://tollgate-collector-replica:80"   # optional A/A noise floor
//! mapping = "/etc/tollgate/mapping.toml"             # optional renames, splits, merges
//! queue = 10000
//! queue_bytes = 268435456
//! shadow_concurrency = 64
//! shadow_timeout = "2s"
//! tolerance = 0.05
//! sample_rate = 1.0
//! sample_key = "user_id"
//! shadow_priority = "idle"
//! max_rows = 10000                  # rows per comparison table; the rest count as `other`
//! header_read_timeout = "10s"
//! idle_timeout = "60s"
//! max_connections = 10000
//! [tls]
//! cert_file = "/etc/tollgate/tls/tls.crt"
//! key_file = "/etc/tollgate/tls/tls.key"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::mapping::Mapping;
use crate::{ProxyConfig, ShadowPriority};

/// Prefix of environment overrides: `TOLLGATE_SHADOW_PROXY_PRIMARY` sets `primary`.
pub const ENV_PREFIX: &str = "TOLLGATE_SHADOW_PROXY_";

/// Every setting, as the layers give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Client traffic.
    pub listen: SocketAddr,
    /// Where reports and metrics are served; never the client-facing port.
    pub admin_listen: SocketAddr,
    /// Required: the collector whose answers clients receive.
    pub primary: Option<String>,
    pub shadow: Option<String>,
    pub replica: Option<String>,
    /// A mapping file (renames, splits, merges; see [`crate::mapping`]), relative to
    /// the working directory.
    pub mapping: Option<PathBuf>,
    pub queue: usize,
    pub queue_bytes: usize,
    pub shadow_concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub shadow_timeout: Duration,
    pub max_body: usize,
    pub tolerance: f64,
    pub sample_rate: f64,
    pub sample_key: String,
    pub shadow_priority: ShadowPriority,
    pub max_rows: usize,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<TlsFile>,
}

impl Default for Settings {
    fn default() -> Self {
        let d = ProxyConfig::default();
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            primary: None,
            shadow: d.shadow,
            replica: d.replica,
            mapping: None,
            queue: d.queue,
            queue_bytes: d.queue_bytes,
            shadow_concurrency: d.shadow_concurrency,
            shadow_timeout: d.shadow_timeout,
            max_body: d.max_body,
            tolerance: d.tolerance,
            sample_rate: d.sample_rate,
            sample_key: d.sample_key,
            shadow_priority: d.shadow_priority,
            max_rows: d.max_rows,
            header_read_timeout: d.header_read_timeout,
            idle_timeout: d.idle_timeout,
            max_connections: d.max_connections,
            tls: None,
        }
    }
}

/// Where the proxy listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// Client traffic (default 127.0.0.1:8081).
    pub public: SocketAddr,
    /// Reports and metrics (default 127.0.0.1:9091).
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The settings could not be read, or do not make a proxy.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file that cannot be read, an unknown key, or a value of the wrong type (from
    /// any layer, named).
    #[error("{0}")]
    Read(#[from] Box<figment::Error>),
    #[error("mapping: {0}")]
    Mapping(String),
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// The layers: defaults, `file` when given, the environment, then `flags` (any
    /// serializable map of settings; absent ones leave lower layers alone).
    ///
    /// # Errors
    /// A missing or invalid file, or a value of the wrong type in any layer.
    pub fn load(file: Option<&Path>, flags: impl Serialize) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed(ENV_PREFIX))
            .merge(Serialized::globals(flags))
            .extract()
            .map_err(|e| SettingsError::Read(Box::new(e)))
    }

    /// The listen addresses and the proxy's run-time settings (the mapping file read).
    ///
    /// # Errors
    /// No primary, an unreadable mapping, or a setting out of range.
    pub fn into_config(self) -> Result<(Listen, ProxyConfig), SettingsError> {
        let invalid = |message: &str| Err(SettingsError::Invalid(message.into()));
        let Some(primary) = self.primary else {
            return invalid("a primary is required: --primary URL or `primary` in the file");
        };
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(SettingsError::Invalid(format!(
                "sample_rate {} is not between 0 and 1",
                self.sample_rate
            )));
        }
        if self.tolerance <= 0.0 {
            return invalid("tolerance must be above 0");
        }
        if self.idle_timeout <= self.shadow_timeout {
            return invalid("idle_timeout must be longer than shadow_timeout");
        }
        let listen = Listen {
            public: self.listen,
            admin: self.admin_listen,
        };
        if listen.public.port() != 0 && listen.public == listen.admin {
            return invalid("listen and admin_listen must differ");
        }
        let mapping = match &self.mapping {
            Some(path) => Mapping::load(path).map_err(SettingsError::Mapping)?,
            None => Mapping::default(),
        };
        let config = ProxyConfig {
            primary,
            shadow: self.shadow,
            replica: self.replica,
            mapping,
            queue: self.queue,
            queue_bytes: self.queue_bytes,
            shadow_concurrency: self.shadow_concurrency,
            shadow_timeout: self.shadow_timeout,
            max_body: self.max_body,
            tolerance: self.tolerance,
            sample_rate: self.sample_rate,
            sample_key: self.sample_key,
            tls: self.tls.map(|t| tollgate_edge::TlsFiles {
                cert: t.cert_file,
                key: t.key_file,
            }),
            shadow_priority: self.shadow_priority,
            max_rows: self.max_rows,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        };
        Ok((listen, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags as `main` passes them: only those given.
    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        sample_rate: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        primary: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mapping: Option<PathBuf>,
    }

    #[test]
    fn a_file_sets_what_flags_do_not_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            "primary = \"http://old:80\"\nshadow = \"http://new:80\"\nshadow_timeout = \"500ms\"\nsample_rate = 0.25\n",
        )
        .unwrap();
        let flags = Flags {
            sample_rate: Some(0.5),
            ..Flags::default()
        };
        let (listen, config) = Settings::load(Some(&path), flags)
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(listen.public.port(), 8081);
        assert_eq!(listen.admin.port(), 9091);
        assert_eq!(config.primary, "http://old:80");
        assert_eq!(config.shadow_timeout, Duration::from_millis(500));
        assert_eq!(config.sample_rate, 0.5, "the flag wins");
        assert_eq!(config.queue, ProxyConfig::default().queue);

        // The shipped example is the defaults.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/shadow-proxy.toml");
        let settings = Settings::load(Some(&shipped), Flags::default()).unwrap();
        assert_eq!(
            Settings {
                primary: None,
                shadow: None,
                ..settings.clone()
            },
            Settings::default()
        );
        let (listen, _) = settings.into_config().unwrap();
        assert_eq!(listen.public.to_string(), "127.0.0.1:8081");

        // A mapping file named in the config is read; a broken one is named.
        let mapping = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mapping.toml");
        std::fs::write(
            &path,
            format!(
                "primary = \"http://old:80\"\nreplica = \"http://old-2:80\"\nmapping = {:?}\n",
                mapping.display().to_string()
            ),
        )
        .unwrap();
        let (_, config) = Settings::load(Some(&path), Flags::default())
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.replica.as_deref(), Some("http://old-2:80"));
        assert_eq!(config.mapping.bridges().len(), 3);
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "[[bridge]]\nold = []\nnew = [\"a\"]\n").unwrap();
        let flags = Flags {
            primary: Some("http://old:80".into()),
            mapping: Some(broken),
            ..Flags::default()
        };
        let error = Settings::load(None, flags)
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(error.to_string().contains("broken.toml"), "{error}");

        std::fs::write(&path, "primry = \"http://old:80\"\n").unwrap();
        let error = Settings::load(Some(&path), Flags::default()).unwrap_err();
        assert!(error.to_string().contains("primry"), "{error}");
        let error = Settings::load(None, Flags::default())
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(error.to_string().contains("primary"), "{error}");
    }
}
