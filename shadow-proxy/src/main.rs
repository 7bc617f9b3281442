//! `tollgate-shadow-proxy`: parses arguments and runs the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use tollgate_shadow_proxy::file::{Settings, TlsFile};
use tollgate_shadow_proxy::run;

/// Mirror collector traffic to a shadow collector during a logging migration. Clients
/// get the primary's answers unchanged; copies go to the shadow through a bounded
/// queue and are dropped (and counted) rather than ever slowing the primary.
/// GET /shadow/report shows per-event outcomes on both sides and the bridge ratios.
///
/// Settings come from, each overriding the one before: the defaults, --config FILE,
/// TOLLGATE_SHADOW_PROXY_* environment variables, then these flags.
#[derive(Debug, Parser, Serialize)]
#[command(name = "tollgate-shadow-proxy", version)]
struct Args {
    #[command(subcommand)]
    #[serde(skip)]
    command: Option<Command>,
    /// A TOML file with any of the settings below (see config/shadow-proxy.toml);
    /// flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<std::path::PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8081].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Address of /shadow/report, /shadow/report.html and /metrics; keep it private
    /// [default: 127.0.0.1:9091].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<SocketAddr>,
    /// The collector whose answers clients receive, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<String>,
    /// The collector that receives copies (marked X-Tollgate-Shadow: 1).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<String>,
    /// A second replica of the primary's version that gets the same copies: new vs old
    /// is flagged only beyond what old vs old shows (A/A noise floor).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    /// TOML with renames (`[rename] old = "new"`) and splits or merges (`[[bridge]]`
    /// with `old`, `new`, `expected_ratio`); see config/mapping.toml.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mapping: Option<std::path::PathBuf>,
    /// Copies waiting for the shadow before new ones are dropped [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<usize>,
    /// Longest the shadow may take for one copy [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    shadow_timeout: Option<Duration>,
    /// A discontinuity is a bridge-ratio interval outside 1 ± this [default: 0.05].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    tolerance: Option<f64>,
    /// Share of traffic mirrored, by a stable hash of --sample-key (whole users stay
    /// together, across restarts and replicas) [default: 1.0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_rate: Option<f64>,
    /// Event field whose hash decides sampling: user_id, device_id or event_id
    /// [default: user_id].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_key: Option<String>,
    /// Serve clients over TLS with this PEM certificate chain (with --tls-key); it is
    /// reloaded on SIGHUP and when the file changes.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    #[serde(skip)]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    #[serde(skip)]
    tls_key: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Compare what two collectors logged (old and new logging over the same traffic).
    /// Exits 1 when a discontinuity or drift is found: usable as a migration gate.
    Compare {
        /// The old collector's data directory.
        #[arg(long)]
        old: std::path::PathBuf,
        /// The new collector's data directory.
        #[arg(long)]
        new: std::path::PathBuf,
        /// TOML with renames, splits and merges (see config/mapping.toml).
        #[arg(long)]
        mapping: Option<std::path::PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A discontinuity is a bridge-ratio interval outside 1 ± this.
        #[arg(long, default_value_t = 0.05)]
        tolerance: f64,
    },
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tollgate-shadow-proxy: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let args = Args::parse();
    if let Some(Command::Compare {
        old,
        new,
        mapping,
        json,
        tolerance,
    }) = args.command
    {
        let mapping = match mapping {
            Some(path) => {
                tollgate_shadow_proxy::mapping::Mapping::load(&path).map_err(anyhow::Error::msg)?
            }
            None => tollgate_shadow_proxy::mapping::Mapping::default(),
        };
        let comparison = tollgate_shadow_proxy::offline::compare(&old, &new, &mapping, tolerance)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&comparison)?);
        } else {
            print!("{}", comparison.human());
        }
        return Ok(comparison.clean());
    }
    let tls = args
        .tls_cert
        .clone()
        .zip(args.tls_key.clone())
        .map(|(cert_file, key_file)| TlsFile {
            cert_file,
            key_file,
        });
    let mut settings = Settings::load(args.config.as_deref(), &args)?;
    if tls.is_some() {
        settings.tls = tls;
    }
    let (listen, config) = settings.into_config()?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen.public)
            .await
            .with_context(|| format!("binding {}", listen.public))?;
        let admin = tokio::net::TcpListener::bind(listen.admin)
            .await
            .with_context(|| format!("binding {}", listen.admin))?;
        // Before saying "ready": a SIGTERM from then on must drain, not kill.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tracing::info!(
            listen = %listener.local_addr()?,
            admin = %admin.local_addr()?,
            "tollgate-shadow-proxy ready"
        );
        // SIGTERM is what Kubernetes sends: drain like on Ctrl-C.
        run(config, listener, Some(admin), async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(true)
}
