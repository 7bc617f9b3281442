//! Tollgate's collector: an HTTP gateway that validates, deduplicates and durably logs
//! behavioural events, and acknowledges only what is durable.
//!
//! # Layout
//! The folders follow a request from the socket to the disk:
//! - [`http`] — listeners, the tower stack, routing, auth, body limits, the memory
//!   budget and gzip, `Idempotency-Key` replay, the answer (the accept loop and TLS
//!   are `tollgate_edge`'s);
//! - [`ratelimit`] — per-source and per-client-IP limits;
//! - [`ingest`] — decoding (native, NDJSON, Segment), then the pipeline as stages:
//!   admission (schema, server timing, privacy), idempotency claim, log append and
//!   commit, answer;
//! - [`schema`] — versioned JSON Schemas, compiled once;
//! - [`privacy`] — regional policies applied before anything is written;
//! - [`dedupe`] — the [`dedupe::IdempotencyStore`] trait and its stores (memory, Redis);
//! - [`sink`] — the [`sink::EventLog`] trait and its logs (segment files, Kafka);
//! - [`telemetry`] — metrics and traces;
//! - [`config`] — the file and environment, composed of the sections each of the
//!   folders above owns (`http::config`, `sink::config`, `dedupe::config`, …);
//! - [`clock`], [`error`]: the injectable clock, and the one mapping of request errors
//!   to HTTP.
//!
//! [`Collector::build`] validates everything before anything listens; [`Collector::run`]
//! takes already-bound listeners and a shutdown future, so tests bind `127.0.0.1:0`.

pub mod clock;
pub mod config;
pub mod dedupe;
pub mod error;
pub mod http;
pub mod ingest;
mod os;
pub mod privacy;
pub mod ratelimit;
pub mod replay;
pub mod rules;
pub mod schema;
pub mod sink;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, SinkKind};
use crate::dedupe::IdempotencyStore;
use crate::http::body::BodyLimits;
use crate::http::{App, Listener, ServeOptions};
use crate::ingest::Pipeline;
use crate::sink::{EventLog, FileLog, KafkaLog};
use crate::telemetry::Metrics;

pub use crate::rules::{Reloaded, Reloader, Rules};

/// A collector that failed to start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("schemas:\n  - {}", .0.join("\n  - "))]
    Schemas(Vec<String>),
    #[error("privacy:\n  - {}", .0.join("\n  - "))]
    Privacy(Vec<String>),
    #[error("server.tls: {0}")]
    Tls(#[from] tollgate_edge::TlsError),
    #[error(transparent)]
    Store(#[from] dedupe::OpenError),
    #[error("log.kafka: {0}")]
    Kafka(#[from] sink::KafkaOpenError),
    #[error("opening the log in {dir}: {source}")]
    Log {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Parts that tests (and later sinks and stores) replace.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Clock>,
    pub log: Option<Arc<dyn EventLog>>,
    pub store: Option<Arc<dyn IdempotencyStore>>,
    pub metrics: Option<Arc<Metrics>>,
    /// The rate limiters' clock (tests move it by hand).
    pub limit_clock: Option<ratelimit::LimitClock>,
}

/// What [`Collector::check`] found in a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    pub sources: usize,
    pub schemas: usize,
    /// Policies in the privacy file, `None` when running without one.
    pub privacy_policies: Option<usize>,
}

/// A configured collector, ready to serve.
pub struct Collector {
    app: Arc<App>,
    config: Config,
    /// The public listener's certificate, when it speaks TLS.
    tls: Option<Arc<tollgate_edge::CertStore>>,
    reloader: Reloader,
}

impl Collector {
    /// What reloads this collector's rules; `run` reloads on SIGHUP with it too.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Where reloads read the configuration from (by default: the one this collector
    /// was built with, its files read again).
    #[must_use]
    pub fn reload_reading(
        mut self,
        load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
        file: Option<std::path::PathBuf>,
    ) -> Collector {
        self.reloader = self.reloader.reading(load, file);
        self
    }

    /// Validates the configuration, compiles the schemas and opens the log.
    ///
    /// # Errors
    /// Every configuration problem, every bad schema, or a log directory that cannot be
    /// used.
    pub fn build(config: Config) -> Result<Collector, BuildError> {
        Self::build_with(config, Overrides::default())
    }

    /// Everything [`build`](Self::build) checks, without opening, generating or
    /// connecting anything: `check-config` and start-up agree by construction.
    ///
    /// # Errors
    /// As [`build`](Self::build), but for the log directory and the stores.
    pub fn check(config: &Config) -> Result<CheckSummary, BuildError> {
        config.validate()?;
        if let Some(t) = &config.server.tls {
            tollgate_edge::CertStore::load(tollgate_edge::TlsFiles {
                cert: t.cert_file.clone(),
                key: t.key_file.clone(),
            })?;
        }
        let schemas = rules::load_schemas(config)?;
        let privacy_policies = match rules::privacy_file(config)? {
            None => None,
            Some(file) => {
                let policies = privacy::config::PrivacyConfig::load(file)
                    .map_err(|e| BuildError::Privacy(vec![e]))?;
                let problems = policies.problems();
                if !problems.is_empty() {
                    return Err(BuildError::Privacy(
                        problems
                            .into_iter()
                            .map(|p| format!("{}: {p}", file.display()))
                            .collect(),
                    ));
                }
                Some(policies.policies.len())
            }
        };
        Ok(CheckSummary {
            sources: config.sources.len(),
            schemas: schemas.len(),
            privacy_policies,
        })
    }

    /// [`build`](Self::build) with some parts supplied by the caller.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_with(config: Config, overrides: Overrides) -> Result<Collector, BuildError> {
        config.validate()?;
        let tls = match &config.server.tls {
            Some(t) => Some(tollgate_edge::CertStore::load(tollgate_edge::TlsFiles {
                cert: t.cert_file.clone(),
                key: t.key_file.clone(),
            })?),
            None => None,
        };
        let metrics = overrides
            .metrics
            .unwrap_or_else(|| Arc::new(Metrics::new()));
        let log = match overrides.log {
            Some(log) => log,
            None => open_log(&config, &metrics)?,
        };
        let idem = &config.idempotency;
        let store = match overrides.store {
            Some(store) => store,
            None => dedupe::open(idem, metrics.clone())?,
        };
        let limit_clock = overrides
            .limit_clock
            .unwrap_or_else(ratelimit::LimitClock::monotonic);
        let rules = Arc::new(arc_swap::ArcSwap::from_pointee(Rules::load(
            &config,
            &metrics,
            limit_clock.clone(),
            None,
        )?));
        {
            let rules = rules.clone();
            metrics.count_candidates_with(move |sink| {
                for candidate in rules.load().schemas.candidates() {
                    for (verdicts, n) in candidate.counts() {
                        sink(&candidate.event, candidate.version, verdicts.label(), n);
                    }
                }
            });
        }
        let tasks = TaskTracker::new();
        let pipeline = Arc::new(Pipeline {
            store,
            log,
            policy: idem.on_store_error,
            allowed_lateness: config.time.allowed_lateness,
            future_tolerance: config.time.future_tolerance,
            region: config.default_region.clone(),
            metrics: metrics.clone(),
            labels: config.telemetry.data_quality.then(|| {
                telemetry::quality::SegmentLabels::new(
                    tollgate_event::Platforms::new(config.platforms.iter().cloned()),
                    config.telemetry.app_version_labels,
                )
            }),
            tasks: tasks.clone(),
        });
        let limits = &config.limits;
        let app = Arc::new(App {
            rules: rules.clone(),
            pipeline,
            clock: overrides.clock.unwrap_or_else(Clock::system),
            metrics,
            platforms: tollgate_event::Platforms::new(config.platforms.iter().cloned()),
            body_limits: BodyLimits {
                max_body: limits.max_body.as_u64(),
                max_decompressed: limits.max_decompressed.as_u64(),
                max_ratio: u64::from(limits.max_gzip_ratio.get()),
            },
            memory: http::body::MemoryBudget::new(limits.max_in_flight_bytes.as_u64()),
            max_event_bytes: limits.max_event.as_u64() as usize,
            max_events: limits.max_events_per_batch.get(),
            max_concurrent_requests: config.server.max_concurrent_requests.get(),
            request_timeout: config.server.request_timeout,
            answer_ttl: idem.dedupe_window,
            shadow_proxies: config.server.shadow_proxies.clone(),
            tasks,
        });
        let reloader = Reloader::new(rules, app.metrics.clone(), limit_clock, config.clone());
        Ok(Collector {
            app,
            config,
            tls,
            reloader,
        })
    }

    /// The configuration this collector was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Flushes and closes the log (for tools that build a collector without serving:
    /// `replay`, whose requests wait for their own commits).
    pub async fn close(&self) {
        self.app.pipeline.log.close().await;
    }

    /// The metrics of this collector (for tests and embedding).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.app.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then drains: stops accepting, lets in-flight
    /// requests finish (up to `server.shutdown_timeout`), waits for their log writes,
    /// and closes the log.
    pub async fn run(
        self,
        public: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) {
        let token = CancellationToken::new();
        let server = &self.config.server;
        let plain = ServeOptions {
            grace: server.shutdown_timeout,
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: server.max_connections.get(),
            ..ServeOptions::default()
        };
        let mut public_options = ServeOptions {
            observer: Some(self.app.metrics.connection_observer("public")),
            ..plain.clone()
        };
        let plain = ServeOptions {
            observer: Some(self.app.metrics.connection_observer("admin")),
            ..plain
        };
        if let (Some(store), Some(settings)) = (&self.tls, &self.config.server.tls) {
            let reloads = self.app.metrics.tls_reloads.clone();
            store.clone().watch_with(
                settings.reload_interval,
                token.child_token(),
                move |outcome| reloads.add(1, &[opentelemetry::KeyValue::new("outcome", outcome)]),
            );
            public_options.tls = Some(
                store
                    .server_config()
                    .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3"),
            );
        }
        reload_on_sighup(self.reloader(), token.child_token());
        let watch = self.config.reload.watch_interval;
        if !watch.is_zero() {
            self.reloader().watch(watch, token.child_token());
        }
        let mut servers = vec![tokio::spawn(http::serve(
            public,
            self.app.clone(),
            Listener::Public,
            token.clone(),
            public_options,
        ))];
        if let Some(admin) = admin {
            // The admin listener stays cleartext: it is only reachable privately.
            servers.push(tokio::spawn(http::serve(
                admin,
                self.app.clone(),
                Listener::Admin,
                token.clone(),
                plain,
            )));
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        token.cancel();
        for server in servers {
            let _ = server.await;
        }
        self.app.tasks.close();
        self.app.tasks.wait().await;
        self.app.pipeline.log.close().await;
        tracing::info!("log flushed; bye");
    }
}

fn open_log(config: &Config, metrics: &Arc<Metrics>) -> Result<Arc<dyn EventLog>, BuildError> {
    let log = &config.log;
    Ok(match log.sink {
        SinkKind::File => {
            let open = |dir: &std::path::Path| -> Result<Arc<dyn EventLog>, BuildError> {
                let file =
                    FileLog::open(dir, log, metrics.clone()).map_err(|source| BuildError::Log {
                        dir: dir.to_owned(),
                        source,
                    })?;
                Ok(Arc::new(file))
            };
            let main = open(&log.data_dir)?;
            match &log.shadow_data_dir {
                Some(dir) => Arc::new(sink::ShadowApart {
                    main,
                    shadow: open(dir)?,
                }),
                None => main,
            }
        }
        SinkKind::Kafka => Arc::new(KafkaLog::open(&log.kafka, metrics.clone())?),
    })
}

/// Reloads the rules on every SIGHUP until `stop`.
fn reload_on_sighup(reloader: Reloader, stop: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: rules reload only on restart");
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangups.recv() => {}
            }
            let reloader = reloader.clone();
            rules::log_reload(
                "SIGHUP",
                tokio::task::spawn_blocking(move || reloader.reload()).await,
            );
        }
    });
    #[cfg(not(unix))]
    let _ = (reloader, stop);
}

/// Unit tests run on the collector's allocator, as the binary does (the idempotency
/// tables' untouched pages, for one, depend on it).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
