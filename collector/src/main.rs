//! `tollgate-collector`: parses arguments, installs logging and runs the collector.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tollgate_collector::Collector;
use tollgate_collector::config::Config;

/// The collector allocates many small, short-lived objects per event (JSON trees,
/// strings); mimalloc serves that pattern markedly faster than the system allocator
/// (measured with scripts/bench-http.sh; see docs/benchmarks.md). The crate's
/// `override` feature makes it the process's `malloc` as well, so the C code linked in
/// (librdkafka, whose producer allocates per message) uses it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Collects behavioural events: validates them against versioned schemas, drops
/// duplicates, stamps server time, and acknowledges only what is durably logged.
///
/// Without --config it runs on the embedded defaults: listen 127.0.0.1:8080, admin
/// 127.0.0.1:9090, data in ./data, in-memory idempotency, schemas from config/schemas,
/// and a local-only source with write key `dev`.
#[derive(Debug, Parser)]
#[command(name = "tollgate-collector", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see config/collector.toml). Every key can also be set
    /// with an environment variable: TOLLGATE_<SECTION>__<KEY>, e.g.
    /// TOLLGATE_SERVER__LISTEN=0.0.0.0:8080.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Public listen address (overrides server.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listen address for /metrics and probes (overrides server.admin_listen).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Data directory of the local log (overrides log.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Deduplicate in this Redis, shared by every collector (sets idempotency.backend
    /// = "redis" and idempotency.redis.url): redis://, rediss:// or redis+unix://.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Serve the embedded `dev` source on a non-loopback --listen address (sets
    /// server.expose_dev_source); refused otherwise, since anyone can guess its key.
    #[arg(long)]
    expose_dev_source: bool,
    /// Serve the public listener over TLS with this PEM certificate chain (with
    /// --tls-key; sets server.tls). Reloaded on SIGHUP and when the file changes.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Append to a Kafka-compatible broker instead of local files (sets log.sink =
    /// "kafka" and log.kafka.brokers): host:port[,host:port…].
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Topic of accepted events (log.kafka.topic).
    #[arg(long, value_name = "TOPIC")]
    kafka_topic: Option<String>,
    /// Topic of rejected events (log.kafka.quarantine_topic).
    #[arg(long, value_name = "TOPIC")]
    kafka_quarantine_topic: Option<String>,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration (its schemas and privacy policies too) and report every
    /// problem.
    CheckConfig,
    /// Schema lifecycle tools.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Check declared expectations over a window of the log (--since/--until), reading
    /// the history before it that the checks need: nulls, uniqueness, freshness,
    /// lateness, validity share, allowed values and ranges, references between events,
    /// funnels, drift, hourly volume, rejected shares. Exits 1 when an expectation
    /// fails (a launch or daily gate), 2 when it could not run.
    Audit {
        /// The collector's data directory (holding events/ and quarantine/).
        #[arg(long, required_unless_present = "kafka", conflicts_with = "kafka")]
        log: Option<PathBuf>,
        #[command(flatten)]
        topics: tollgate_log::TopicArgs,
        /// The expectations file (TOML; see config/expectations.toml).
        #[arg(long)]
        expectations: PathBuf,
        /// Judge the records logged at or after this time: RFC 3339, `today`,
        /// `yesterday` (00:00 UTC) or `-DURATION` before --now (`-24h`). The history the
        /// checks need (volume baselines, drift, duplicates, references, quarantine
        /// shares) is read from before it.
        #[arg(long, value_parser = tollgate_audit::TimeArg::parse, allow_hyphen_values = true)]
        since: Option<tollgate_audit::TimeArg>,
        /// Judge the records logged before this time (as --since) [default: --now].
        #[arg(long, value_parser = tollgate_audit::TimeArg::parse, allow_hyphen_values = true)]
        until: Option<tollgate_audit::TimeArg>,
        /// "Now" for the freshness check (RFC 3339); default: the clock.
        #[arg(long, value_parser = tollgate_audit::parse_time)]
        now: Option<i64>,
        /// Threads parsing the log [default: one per core].
        #[arg(long)]
        threads: Option<usize>,
        /// Also write the findings as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write a self-contained HTML report, with a chart per anomalous series.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Replay quarantined events through today's pipeline (schemas, privacy, the
    /// idempotency store and the log of this configuration and these flags): what is
    /// valid now is logged once, with its original timestamp_server, `replayed_at` and
    /// `replay_of`; the rest stays quarantined, counted by reason. With the file log it
    /// takes the data directory's lock: stop that collector first. Exactly once over
    /// reruns and interruptions (a ledger in --state-dir, and the idempotency claims).
    Replay {
        /// The quarantine to read [default: <data_dir>/quarantine, or the quarantine
        /// topic with the Kafka log].
        #[arg(long)]
        quarantine: Option<PathBuf>,
        /// Only records quarantined at or after this time (RFC 3339).
        #[arg(long, value_parser = tollgate_audit::parse_time)]
        since: Option<i64>,
        /// Only records quarantined before this time (RFC 3339).
        #[arg(long, value_parser = tollgate_audit::parse_time)]
        until: Option<i64>,
        /// Only events of this name.
        #[arg(long)]
        event: Option<String>,
        /// Only events rejected with this error code (e.g. schema_violation).
        #[arg(long)]
        code: Option<String>,
        /// Report what would be accepted, per event and error code; claim, write and
        /// lock nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where the replay ledger is kept [default: <data_dir>/replay].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an event as it would be logged under the privacy policy: a dry run for
    /// reviewing a policy change. Nothing is written.
    PrivacyCheck {
        /// A native event (JSON file).
        #[arg(long)]
        event: PathBuf,
        /// Apply this region's policy: a region name of the privacy file (e.g. eu) or a
        /// country code, as a trusted edge header would send it (e.g. DE, US-CA);
        /// anything else is refused with the list of regions. Default: from the
        /// event's context.country.
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Lint every schema and classify each change between consecutive versions (and,
    /// with --against, against the folder's previous state) as compatible or
    /// breaking. Exit 0 when all is compatible or declared (`x-tollgate-breaking`), 1
    /// on any violation, 2 on usage errors. A pre-merge step.
    Check {
        /// The schema folder [default: the configuration's schemas.dir].
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// The folder's previous state (e.g. a checkout of the main branch): versions
        /// may only change compatibly in place, and none may be deleted.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Print the findings as JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Turn a candidate schema (`<event>/v<N>.candidate.json`) into a live version:
    /// checked as `schema check` does, then renamed to `v<N>.json`. Collectors take it
    /// on their next reload (SIGHUP, or reload.watch_interval). Exit 0 promoted, 1
    /// refused by the check, 2 usage errors (no such candidate).
    Promote {
        /// The event name.
        event: String,
        /// The candidate's version: `v3` or `3`.
        #[arg(value_parser = parse_version)]
        version: u32,
        /// The schema folder [default: the configuration's schemas.dir].
        #[arg(long)]
        schemas: Option<PathBuf>,
    },
}

fn parse_version(text: &str) -> Result<u32, String> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("{text:?} is not a version (v1, v2, …)"))
}

/// The schema folder a `schema` command works on: `--schemas`, else the
/// configuration's.
fn schema_dir(
    config: Option<&std::path::Path>,
    schemas: Option<PathBuf>,
) -> Result<PathBuf, ExitCode> {
    match schemas {
        Some(dir) => Ok(dir),
        None => match Config::load(config) {
            Ok(config) => Ok(config.schemas.dir),
            Err(e) => {
                eprintln!("tollgate-collector: {e:#}");
                Err(ExitCode::from(2))
            }
        },
    }
}

/// `schema promote`: 0 promoted, 1 refused by the check, 2 usage errors.
fn schema_promote(
    config: Option<&std::path::Path>,
    schemas: Option<PathBuf>,
    event: &str,
    version: u32,
) -> ExitCode {
    use tollgate_collector::schema::promote::{PromoteError, promote};
    let dir = match schema_dir(config, schemas) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    match promote(&dir, event, version) {
        Ok(done) => {
            for f in &done.findings {
                println!("{}: {} ({})", f.event, f.message, f.rule);
            }
            println!(
                "promoted {} -> {}; collectors take it on their next reload (SIGHUP, or reload.watch_interval)",
                done.from.display(),
                done.to.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate-collector: schema promote: {e}");
            match e {
                PromoteError::Check { .. } => ExitCode::FAILURE,
                PromoteError::Usage(_) | PromoteError::Rename { .. } => ExitCode::from(2),
            }
        }
    }
}

/// `schema check`, with its own exit codes: 0 clean, 1 violations, 2 usage errors.
fn schema_check(
    config: Option<&std::path::Path>,
    schemas: Option<PathBuf>,
    against: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let dir = match schema_dir(config, schemas) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    match tollgate_collector::schema::check::check(&dir, against.as_deref()) {
        Err(e) => {
            eprintln!("tollgate-collector: schema check: {e}");
            ExitCode::from(2)
        }
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("findings serialize")
                );
            } else {
                print!("{}", report.human());
            }
            if report.violations() > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Schema(SchemaCommand::Check {
        schemas,
        against,
        json,
    })) = &args.command
    {
        return schema_check(
            args.config.as_deref(),
            schemas.clone(),
            against.clone(),
            *json,
        );
    }
    if let Some(Command::Schema(SchemaCommand::Promote {
        event,
        version,
        schemas,
    })) = &args.command
    {
        return schema_promote(args.config.as_deref(), schemas.clone(), event, *version);
    }
    // One TLS crypto provider for the whole process (rediss://, and TLS listeners).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-collector: {e:#}");
            e.downcast_ref::<Exit>()
                .map_or(ExitCode::FAILURE, |exit| ExitCode::from(exit.code))
        }
    }
}

/// An error that ends the process with its own code: the audit exits 1 when an
/// expectation failed and 2 when it could not run (a scheduler retries only the latter).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Exit {
    code: u8,
    message: String,
}

/// The configuration: the file (or the embedded default), the environment, then the
/// flags. A reload reads it again the same way.
fn configure(args: &Args) -> Result<Config, tollgate_collector::config::ConfigError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.server.admin_listen = Some(admin);
    }
    if args.expose_dev_source {
        config.server.expose_dev_source = true;
    }
    if let Some(dir) = args.data_dir.clone() {
        config.log.data_dir = dir;
    }
    if let Some(url) = args.redis.clone() {
        config.idempotency.backend = tollgate_collector::config::IdempotencyBackend::Redis;
        config.idempotency.redis.url = url;
        config.idempotency.redis.cluster_nodes.clear();
    }
    if let (Some(cert_file), Some(key_file)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        let reload_interval = config
            .server
            .tls
            .as_ref()
            .map_or(std::time::Duration::from_secs(10), |t| t.reload_interval);
        config.server.tls = Some(tollgate_collector::config::TlsConfig {
            cert_file,
            key_file,
            reload_interval,
        });
    }
    if let Some(brokers) = args.kafka.clone() {
        config.log.sink = tollgate_collector::config::SinkKind::Kafka;
        config.log.kafka.brokers = brokers;
    }
    if let Some(topic) = args.kafka_topic.clone() {
        config.log.kafka.topic = topic;
    }
    if let Some(topic) = args.kafka_quarantine_topic.clone() {
        config.log.kafka.quarantine_topic = topic;
    }
    Ok(config)
}

fn run(mut args: Args) -> anyhow::Result<()> {
    let config = configure(&args)?;
    let command = args.command.take();
    let args = std::sync::Arc::new(args);
    let tracing = tollgate_collector::telemetry::tracing_setup::install(
        matches!(args.log_format, LogFormat::Json),
        std::io::stderr().is_terminal(),
        &config.telemetry,
    )?;
    match command {
        Some(Command::CheckConfig) => return check_config(&config),
        Some(Command::Audit {
            log,
            topics,
            expectations,
            since,
            until,
            now,
            threads,
            json,
            html,
        }) => {
            let expectations = tollgate_audit::Expectations::load(&expectations)
                .map_err(|message| Exit { code: 2, message })?;
            let now = now.unwrap_or_else(|| {
                (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
            });
            let input = match (log, topics.source()) {
                (Some(dir), _) => tollgate_audit::AuditInput::Dir(dir),
                (None, Some(source)) => tollgate_audit::AuditInput::Kafka(source),
                (None, None) => unreachable!("clap requires --log or --kafka"),
            };
            let mut options = tollgate_audit::AuditOptions::new(input, now);
            options.since = since.map(|t| t.at(now));
            options.until = until.map(|t| t.at(now));
            if let Some(threads) = threads {
                options.threads = threads;
            }
            let report = tollgate_audit::audit(&options, &expectations).map_err(|e| Exit {
                code: 2,
                message: format!("audit: {e}"),
            })?;
            print!("{}", report.human());
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(path) = html {
                std::fs::write(&path, report.html())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if !report.passed() {
                anyhow::bail!("audit failed");
            }
            return Ok(());
        }
        Some(Command::PrivacyCheck { event, region }) => {
            return privacy_check(&config, &event, region.as_deref());
        }
        Some(Command::Schema(_)) => unreachable!("schema commands run before the configuration"),
        Some(Command::Replay {
            quarantine,
            since,
            until,
            event,
            code,
            dry_run,
            state_dir,
            json,
        }) => {
            let at = |micros: i64| {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
                    .expect("parse_time gives representable times")
            };
            let data_dir = config.log.data_dir.clone();
            let input = match (quarantine, &config.log.sink) {
                (Some(dir), _) => tollgate_collector::replay::QuarantineInput::Dir(dir),
                (None, tollgate_collector::config::SinkKind::Kafka) => {
                    let kafka = &config.log.kafka;
                    tollgate_collector::replay::QuarantineInput::Kafka(tollgate_log::TopicSource {
                        brokers: kafka.brokers.clone(),
                        topic: kafka.topic.clone(),
                        quarantine_topic: Some(kafka.quarantine_topic.clone()),
                        idle: std::time::Duration::from_secs(3),
                    })
                }
                (None, _) => {
                    tollgate_collector::replay::QuarantineInput::Dir(data_dir.join("quarantine"))
                }
            };
            let options = tollgate_collector::replay::ReplayOptions {
                input,
                events_dir: data_dir.join("events"),
                since: since.map(at),
                until: until.map(at),
                event,
                code,
                dry_run,
                state_dir: state_dir.unwrap_or_else(|| data_dir.join("replay")),
                batch: config.limits.max_events_per_batch.get(),
                stop_after_appends: None,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let report = runtime.block_on(async {
                let overrides = tollgate_collector::Overrides {
                    log: dry_run.then(|| {
                        std::sync::Arc::new(tollgate_collector::replay::NoLog)
                            as std::sync::Arc<dyn tollgate_collector::sink::EventLog>
                    }),
                    ..Default::default()
                };
                let collector = Collector::build_with(config, overrides)?;
                let report = collector.replay(&options).await;
                collector.close().await;
                anyhow::Ok(report?)
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.human());
            }
            return Ok(());
        }
        None => {}
    }

    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let served = runtime.block_on(async move {
        let file = args.config.clone();
        let collector = Collector::build(config)?.reload_reading(move || configure(&args), file);
        let server = &collector.config().server;
        let public = tokio::net::TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("binding {}", server.listen))?;
        let admin = match server.admin_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener {addr}"))?,
            ),
            None => None,
        };
        // Before saying "ready": a SIGTERM from then on must drain, not kill.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tracing::info!(
            listen = %public.local_addr()?,
            admin = ?admin.as_ref().map(|a| a.local_addr()).transpose()?,
            tls = collector.config().server.tls.is_some(),
            sink = ?collector.config().log.sink,
            data_dir = %collector.config().log.data_dir.display(),
            "tollgate-collector ready"
        );
        collector.run(public, admin, shutdown_signal(term)).await;
        anyhow::Ok(())
    });
    tracing.shutdown();
    served
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let summary = Collector::check(config)?;
    let privacy = match summary.privacy_policies {
        Some(n) => format!("{n} privacy policies"),
        None => "no privacy policies".to_owned(),
    };
    println!(
        "configuration OK: {} source(s), {} schema(s), {privacy}",
        summary.sources, summary.schemas
    );
    Ok(())
}

fn privacy_check(
    config: &Config,
    event: &std::path::Path,
    region: Option<&str>,
) -> anyhow::Result<()> {
    use tollgate_collector::privacy::{Verdict, load_for_review};
    let (privacy, throwaway) = load_for_review(&config.privacy.file)
        .map_err(|problems| anyhow::anyhow!("privacy:\n  - {}", problems.join("\n  - ")))?;
    let text = std::fs::read(event).with_context(|| format!("reading {}", event.display()))?;
    let platforms = tollgate_event::Platforms::new(config.platforms.iter().cloned());
    let (mut event, _) = tollgate_event::parse_event_text(&text, &platforms)
        .map_err(|e| anyhow::anyhow!("the event is invalid: {e}"))?;
    let policy = match region {
        Some(name) => privacy
            .policy_named(name)
            .map_err(|e| anyhow::anyhow!("--region: {e}"))?
            .clone(),
        None => privacy.policy_for(None, &event.context).clone(),
    };
    let verdict = privacy.apply(&policy, &mut event);
    eprintln!("region {}, policy {}", policy.region, policy.id);
    if throwaway {
        eprintln!("note: no HMAC key is configured, so pseudonyms below use a throwaway key");
    }
    match verdict {
        Verdict::Drop { reason } => println!("dropped: {reason} (the event would not be stored)"),
        Verdict::Reject(error) => println!(
            "rejected: {} at {}: {} (only a policy-applied copy would reach the quarantine)",
            error.code.as_str(),
            error.path,
            error.message
        ),
        Verdict::Keep { previous } => {
            let mut out = serde_json::to_value(&event)?;
            if let Some(previous) = previous {
                out["pseudonyms_previous"] = serde_json::Value::Object(previous);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

/// Resolves on SIGTERM (through the installed `term` handler) or SIGINT.
async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
