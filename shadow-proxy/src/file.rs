//! The proxy's configuration file: any of the command-line settings, in TOML; flags
//! override it.
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

use serde::Deserialize;

use crate::ProxyConfig;

/// Every setting optional: a file, or the flags, or both merged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub listen: Option<SocketAddr>,
    /// Where reports and metrics are served; never the client-facing port.
    pub admin_listen: Option<SocketAddr>,
    pub primary: Option<String>,
    pub shadow: Option<String>,
    pub replica: Option<String>,
    /// A mapping file (renames, splits, merges; see [`crate::mapping`]), relative to
    /// the working directory.
    pub mapping: Option<PathBuf>,
    pub queue: Option<usize>,
    pub queue_bytes: Option<usize>,
    pub shadow_concurrency: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub shadow_timeout: Option<Duration>,
    pub max_body: Option<usize>,
    pub tolerance: Option<f64>,
    pub sample_rate: Option<f64>,
    pub sample_key: Option<String>,
    pub shadow_priority: Option<crate::ShadowPriority>,
    pub max_rows: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub tls: Option<TlsFile>,
}

/// Where the proxy listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// Client traffic (default 127.0.0.1:8081).
    pub public: SocketAddr,
    /// Reports and metrics (default 127.0.0.1:9091).
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl From<tollgate_edge::TlsFiles> for TlsFile {
    fn from(files: tollgate_edge::TlsFiles) -> Self {
        TlsFile {
            cert_file: files.cert,
            key_file: files.key,
        }
    }
}

impl ProxyFile {
    /// Reads a file.
    ///
    /// # Errors
    /// Unreadable or invalid TOML (unknown keys included), naming the file.
    pub fn load(path: &Path) -> Result<ProxyFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `self` with every setting `overrides` gives replaced.
    pub fn merge(self, overrides: ProxyFile) -> ProxyFile {
        ProxyFile {
            listen: overrides.listen.or(self.listen),
            admin_listen: overrides.admin_listen.or(self.admin_listen),
            primary: overrides.primary.or(self.primary),
            shadow: overrides.shadow.or(self.shadow),
            replica: overrides.replica.or(self.replica),
            mapping: overrides.mapping.or(self.mapping),
            queue: overrides.queue.or(self.queue),
            queue_bytes: overrides.queue_bytes.or(self.queue_bytes),
            shadow_concurrency: overrides.shadow_concurrency.or(self.shadow_concurrency),
            shadow_timeout: overrides.shadow_timeout.or(self.shadow_timeout),
            max_body: overrides.max_body.or(self.max_body),
            tolerance: overrides.tolerance.or(self.tolerance),
            sample_rate: overrides.sample_rate.or(self.sample_rate),
            sample_key: overrides.sample_key.or(self.sample_key),
            shadow_priority: overrides.shadow_priority.or(self.shadow_priority),
            max_rows: overrides.max_rows.or(self.max_rows),
            header_read_timeout: overrides.header_read_timeout.or(self.header_read_timeout),
            idle_timeout: overrides.idle_timeout.or(self.idle_timeout),
            max_connections: overrides.max_connections.or(self.max_connections),
            tls: overrides.tls.or(self.tls),
        }
    }

    /// The listen addresses and the proxy settings, defaults filled in.
    ///
    /// # Errors
    /// No primary, or a setting out of range.
    pub fn into_config(self) -> Result<(Listen, ProxyConfig), String> {
        let defaults = ProxyConfig::default();
        let primary = self
            .primary
            .ok_or("a primary is required: --primary URL or `primary` in the file")?;
        let config = ProxyConfig {
            primary,
            shadow: self.shadow,
            replica: self.replica,
            mapping: match &self.mapping {
                Some(path) => crate::mapping::Mapping::load(path)?,
                None => crate::mapping::Mapping::default(),
            },
            queue: self.queue.unwrap_or(defaults.queue),
            queue_bytes: self.queue_bytes.unwrap_or(defaults.queue_bytes),
            shadow_concurrency: self
                .shadow_concurrency
                .unwrap_or(defaults.shadow_concurrency),
            shadow_timeout: self.shadow_timeout.unwrap_or(defaults.shadow_timeout),
            max_body: self.max_body.unwrap_or(defaults.max_body),
            tolerance: self.tolerance.unwrap_or(defaults.tolerance),
            sample_rate: self.sample_rate.unwrap_or(defaults.sample_rate),
            sample_key: self.sample_key.unwrap_or(defaults.sample_key),
            shadow_priority: self.shadow_priority.unwrap_or(defaults.shadow_priority),
            max_rows: self.max_rows.unwrap_or(defaults.max_rows),
            header_read_timeout: self
                .header_read_timeout
                .unwrap_or(defaults.header_read_timeout),
            idle_timeout: self.idle_timeout.unwrap_or(defaults.idle_timeout),
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            tls: self.tls.map(|t| tollgate_edge::TlsFiles {
                cert: t.cert_file,
                key: t.key_file,
            }),
        };
        if !(0.0..=1.0).contains(&config.sample_rate) {
            return Err(format!(
                "sample_rate {} is not between 0 and 1",
                config.sample_rate
            ));
        }
        if config.tolerance <= 0.0 {
            return Err("tolerance must be above 0".into());
        }
        if config.idle_timeout <= config.shadow_timeout {
            return Err("idle_timeout must be longer than shadow_timeout".into());
        }
        let listen = Listen {
            public: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
            admin: self
                .admin_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9091))),
        };
        if listen.public.port() != 0 && listen.public == listen.admin {
            return Err("listen and admin_listen must differ".into());
        }
        Ok((listen, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_what_flags_do_not_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            "primary = \"http://old:80\"\nshadow = \"http://new:80\"\nshadow_timeout = \"500ms\"\nsample_rate = 0.25\n",
        )
        .unwrap();
        let file = ProxyFile::load(&path).unwrap();
        let flags = ProxyFile {
            sample_rate: Some(0.5),
            ..ProxyFile::default()
        };
        let (listen, config) = file.merge(flags).into_config().unwrap();
        assert_eq!(listen.public.port(), 8081);
        assert_eq!(listen.admin.port(), 9091);
        assert_eq!(config.primary, "http://old:80");
        assert_eq!(config.shadow_timeout, Duration::from_millis(500));
        assert_eq!(config.sample_rate, 0.5, "the flag wins");
        assert_eq!(config.queue, ProxyConfig::default().queue);

        // The shipped example is the defaults.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/shadow-proxy.toml");
        let (listen, config) = ProxyFile::load(&shipped).unwrap().into_config().unwrap();
        let defaults = ProxyConfig::default();
        assert_eq!(listen.public.to_string(), "127.0.0.1:8081");
        assert_eq!(config.queue_bytes, defaults.queue_bytes);
        assert_eq!(config.shadow_priority, defaults.shadow_priority);
        assert_eq!(
            (
                config.queue,
                config.shadow_concurrency,
                config.shadow_timeout,
                config.max_body
            ),
            (
                defaults.queue,
                defaults.shadow_concurrency,
                defaults.shadow_timeout,
                defaults.max_body
            )
        );
        assert_eq!(
            (config.tolerance, config.sample_rate),
            (defaults.tolerance, defaults.sample_rate)
        );

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
        let (_, config) = ProxyFile::load(&path).unwrap().into_config().unwrap();
        assert_eq!(config.replica.as_deref(), Some("http://old-2:80"));
        assert_eq!(config.mapping.bridges().len(), 3);
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "[[bridge]]\nold = []\nnew = [\"a\"]\n").unwrap();
        let file = ProxyFile {
            primary: Some("http://old:80".into()),
            mapping: Some(broken),
            ..ProxyFile::default()
        };
        assert!(file.into_config().unwrap_err().contains("broken.toml"));

        std::fs::write(&path, "primry = \"http://old:80\"\n").unwrap();
        assert!(ProxyFile::load(&path).unwrap_err().contains("primry"));
        assert!(
            ProxyFile::default()
                .into_config()
                .unwrap_err()
                .contains("primary")
        );
    }
}
