//! The rules a request is judged by — schemas, privacy policies, sources with their
//! write keys and rate limits — held as one value that a reload replaces whole.
//!
//! A request loads the rules once, when its headers arrive, and keeps them to the end:
//! requests in flight finish under the rules they started with, new ones see the new
//! rules, and no request mixes the two (an `ArcSwap`, so loading costs no lock).
//!
//! What a reload takes from the configuration: `[schemas]`, `[privacy]` (and the policy
//! file it names), and `[[sources]]` (with their `write_keys_file`s). Every other
//! section needs a restart; a reload that finds one of them changed says so and applies
//! the rest. A reload happens on SIGHUP, and — with `reload.watch_interval` set — when
//! one of the files the rules come from changed and then held still for an interval.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::BuildError;
use crate::config::{self, Config, ConfigError};
use crate::http::auth::Sources;
use crate::privacy::{self, Privacy};
use crate::ratelimit::{LimitClock, RateLimits};
use crate::schema::SchemaRegistry;
use crate::telemetry::Metrics;

/// `[reload]`: reloading without SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// How often the files the rules come from (the configuration file, the schema
    /// folder, the privacy file, `write_keys_file`s, the pseudonym key file) are
    /// checked for changes; a change is reloaded once the files held still for one
    /// more interval (so a half-copied folder is never loaded). `0s`: only SIGHUP
    /// reloads.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

/// Everything a reload can change, in force as one set.
pub struct Rules {
    pub schemas: SchemaRegistry,
    /// Regional privacy policies; `None` runs without any.
    pub privacy: Option<Privacy>,
    /// Sources by write key and by Snowplow app id.
    pub sources: Sources,
    /// Per-source and per-client-IP limits; `None` when no source has any.
    pub rate_limits: Option<Arc<RateLimits>>,
}

impl Rules {
    /// Reads and checks the rules `config` names. `previous`, on a reload, lends the
    /// state of rate limiters whose limits did not change, and the counts of candidate
    /// schemas that did not change.
    ///
    /// # Errors
    /// Every problem of the schemas, or of the privacy file; nothing is half-loaded.
    pub fn load(
        config: &Config,
        metrics: &Metrics,
        limit_clock: LimitClock,
        previous: Option<&Rules>,
    ) -> Result<Rules, BuildError> {
        let mut schemas = load_schemas(config)?;
        if let Some(previous) = previous {
            schemas.keep_candidate_counts_of(&previous.schemas);
        }
        let mut privacy = load_privacy(config)?;
        if let Some(privacy) = &mut privacy {
            privacy.count_pii_on(metrics.privacy_pii.clone());
        }
        let mut rate_limits = RateLimits::new(
            config
                .sources
                .iter()
                .map(|s| (s.id.as_str(), &s.rate_limit)),
            config.server.trusted_proxies.clone(),
            config.server.max_tracked_ips.get(),
            limit_clock,
        );
        if let Some(old) = previous.and_then(|p| p.rate_limits.as_deref()) {
            rate_limits = rate_limits.keeping_state_of(old);
        }
        Ok(Rules {
            schemas,
            privacy,
            sources: Sources::new(&config.sources),
            rate_limits: rate_limits.any().then(|| Arc::new(rate_limits)),
        })
    }
}

/// Reloads the rules from the configuration (what SIGHUP does).
#[derive(Clone)]
pub struct Reloader {
    rules: Arc<arc_swap::ArcSwap<Rules>>,
    metrics: Arc<Metrics>,
    limit_clock: LimitClock,
    /// Reads the configuration again: the file and environment the collector started
    /// from (or, embedded, the configuration it was built with).
    load: Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    /// The configuration last applied, to tell what a reload could not apply.
    applied: Arc<Mutex<Config>>,
    /// Files to watch besides those the configuration names (its own file).
    config_files: Vec<PathBuf>,
}

/// What a reload applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Schemas in the new set, and the set's id.
    pub schemas: usize,
    pub schema_set: String,
    pub sources: usize,
    /// Sections that changed but take effect only after a restart.
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    pub(crate) fn new(
        rules: Arc<arc_swap::ArcSwap<Rules>>,
        metrics: Arc<Metrics>,
        limit_clock: LimitClock,
        config: Config,
    ) -> Reloader {
        let start = config.clone();
        Reloader {
            rules,
            metrics,
            limit_clock,
            load: Arc::new(move || Ok(start.clone())),
            applied: Arc::new(Mutex::new(config)),
            config_files: Vec::new(),
        }
    }

    /// Where [`reload`](Self::reload) reads the configuration from (`main` passes the
    /// file and environment it started from), and the file it reads, if any (watched
    /// with the others).
    #[must_use]
    pub fn reading(
        mut self,
        load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
        file: Option<PathBuf>,
    ) -> Reloader {
        self.load = Arc::new(load);
        self.config_files = file.into_iter().collect();
        self
    }

    /// What the files the rules come from look like now: for each file (and each file
    /// under the schema folder), its path, size and modification time.
    fn fingerprint(&self) -> Vec<(PathBuf, Option<(u64, SystemTime)>)> {
        let config = self
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut paths = self.config_files.clone();
        paths.push(config.schemas.dir.clone());
        if config.privacy.file.as_os_str() != "none" {
            paths.push(config.privacy.file.clone());
        }
        paths.extend(
            config
                .sources
                .iter()
                .filter_map(|s| s.write_keys_file.clone()),
        );
        paths.extend(config.privacy.hmac_key.and_then(|k| k.file));
        let mut seen = Vec::new();
        while let Some(path) = paths.pop() {
            // Metadata through symlinks: a ConfigMap swaps its `..data` link.
            let meta = std::fs::metadata(&path).ok();
            if meta.as_ref().is_some_and(std::fs::Metadata::is_dir) {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    paths.extend(entries.filter_map(Result::ok).map(|e| e.path()));
                }
                continue;
            }
            let stamp = meta.and_then(|m| Some((m.len(), m.modified().ok()?)));
            seen.push((path, stamp));
        }
        seen.sort();
        seen
    }

    /// Reloads whenever the watched files changed and then held still for one
    /// `interval`, until `stop`.
    pub(crate) fn watch(self, interval: Duration, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut loaded = self.fingerprint();
            let mut last = loaded.clone();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let this = self.clone();
                let Ok(now) = tokio::task::spawn_blocking(move || this.fingerprint()).await else {
                    continue;
                };
                // Changed since the last reload, and unchanged since the last look.
                let settled = now != loaded && now == last;
                last = now;
                if settled {
                    loaded = last.clone();
                    let this = self.clone();
                    let outcome = tokio::task::spawn_blocking(move || this.reload()).await;
                    log_reload("changed files", outcome);
                }
            }
        });
    }

    /// Reads the configuration again and applies its rules.
    ///
    /// # Errors
    /// As [`reload_from`](Self::reload_from), or a configuration that cannot be read.
    pub fn reload(&self) -> Result<Reloaded, BuildError> {
        match (self.load)() {
            Ok(config) => self.reload_from(config),
            Err(e) => {
                self.count("failed");
                Err(e.into())
            }
        }
    }

    /// Applies the rules of `config`: checks them all, then swaps the whole set in at
    /// once. A configuration that fails any check keeps the rules in force. Counted in
    /// `tollgate_config_reloads_total{outcome}`.
    ///
    /// # Errors
    /// Every problem found; nothing was swapped then.
    pub fn reload_from(&self, config: Config) -> Result<Reloaded, BuildError> {
        let loaded = config.validate().map_err(BuildError::from).and_then(|()| {
            let previous = self.rules.load();
            Rules::load(
                &config,
                &self.metrics,
                self.limit_clock.clone(),
                Some(&previous),
            )
        });
        let rules = match loaded {
            Ok(rules) => rules,
            Err(e) => {
                self.count("failed");
                return Err(e);
            }
        };
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let reloaded = Reloaded {
            schemas: rules.schemas.len(),
            schema_set: rules.schemas.id().to_owned(),
            sources: config.sources.len(),
            need_restart: need_restart(&applied, &config),
        };
        self.rules.store(Arc::new(rules));
        // The sections a reload cannot apply stay as they run, so that the next reload
        // warns about them again rather than taking them for applied.
        let mut kept = applied.clone();
        kept.schemas = config.schemas;
        kept.privacy = config.privacy;
        kept.sources = config.sources;
        *applied = kept;
        self.count("reloaded");
        Ok(reloaded)
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .config_reloads
            .add(1, &[opentelemetry::KeyValue::new("outcome", outcome)]);
    }
}

/// Logs what a reload did (`why`: SIGHUP, changed files).
pub(crate) fn log_reload(
    why: &str,
    outcome: Result<Result<Reloaded, BuildError>, tokio::task::JoinError>,
) {
    match outcome {
        Ok(Ok(done)) => {
            tracing::info!(
                why,
                schemas = done.schemas,
                schema_set = %done.schema_set,
                sources = done.sources,
                "schemas, privacy policies and sources reloaded"
            );
            if !done.need_restart.is_empty() {
                tracing::warn!(
                    sections = ?done.need_restart,
                    "these sections changed but take effect only after a restart"
                );
            }
        }
        Ok(Err(e)) => tracing::error!(why, error = %e, "reload failed; the rules in force stay"),
        Err(e) => tracing::error!(why, error = %e, "reload task failed"),
    }
}

/// The sections of `new` that differ from `running` and that only a restart applies.
fn need_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let Config {
        server,
        limits,
        time,
        schemas: _,
        log,
        idempotency,
        privacy: _,
        telemetry,
        platforms,
        default_region,
        sources: _,
        reload,
    } = new;
    [
        ("server", *server != running.server),
        ("limits", *limits != running.limits),
        ("time", *time != running.time),
        ("log", *log != running.log),
        ("idempotency", *idempotency != running.idempotency),
        ("telemetry", *telemetry != running.telemetry),
        ("platforms", *platforms != running.platforms),
        ("default_region", *default_region != running.default_region),
        ("reload", *reload != running.reload),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

pub(crate) fn load_schemas(config: &Config) -> Result<SchemaRegistry, BuildError> {
    let dir = &config.schemas.dir;
    if !dir.exists() && *dir == config::SchemasConfig::default().dir {
        tracing::warn!(dir = %dir.display(), "schema folder not found; running with no registered schemas");
        return Ok(SchemaRegistry::default());
    }
    let schemas = SchemaRegistry::load(dir).map_err(BuildError::Schemas)?;
    tracing::info!(dir = %dir.display(), schemas = schemas.len(), schema_set = schemas.id(), "schemas loaded");
    Ok(schemas)
}

/// The privacy file to load: `None` for `"none"`, and for the default path when it does
/// not exist (said at start-up); any other path must exist.
pub(crate) fn privacy_file(config: &Config) -> Result<Option<&std::path::Path>, BuildError> {
    let file = &config.privacy.file;
    if file.as_os_str() == "none" {
        return Ok(None);
    }
    if !file.exists() {
        if *file == config::PrivacySettings::default().file {
            return Ok(None);
        }
        return Err(BuildError::Privacy(vec![format!(
            "{}: no such file (set privacy.file = \"none\" to run without policies)",
            file.display()
        )]));
    }
    Ok(Some(file))
}

fn load_privacy(config: &Config) -> Result<Option<Privacy>, BuildError> {
    let Some(file) = privacy_file(config)? else {
        if config.privacy.file.as_os_str() == "none" {
            tracing::warn!("privacy policies disabled (privacy.file = \"none\")");
        } else {
            tracing::warn!(file = %config.privacy.file.display(), "privacy policy file not found; running without privacy policies");
        }
        return Ok(None);
    };
    let privacy = privacy::load(file, &config.log.data_dir, config.privacy.hmac_key.as_ref())
        .map_err(BuildError::Privacy)?;
    tracing::info!(file = %file.display(), key = privacy.key_id(), "privacy policies loaded");
    Ok(Some(privacy))
}
