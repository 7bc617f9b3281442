//! `tollgate-loadtest`: parses arguments and runs the load or the reconciliation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_loadtest::generate::{Protocol, Scenario};
use tollgate_loadtest::report::{Gates, Report};
use tollgate_loadtest::run::{Model, RunConfig, Stage, run};
use tollgate_loadtest::verify::{LogSource, verify_source};

/// Load-test a Tollgate collector with realistic SDK traffic, then prove from its log
/// that nothing acknowledged was lost or counted twice.
///
/// Example (closed model, then reconciliation against the collector's data dir):
///
///   tollgate-loadtest run --target http://127.0.0.1:8080 --connections 32 \
///       --duration 30s --manifest run.ndjson --out report.json
///
///   tollgate-loadtest verify --manifest run.ndjson --log ./data --json verify.json
///
///   tollgate-loadtest report report.json --verify verify.json --html launch.html
#[derive(Debug, Parser)]
#[command(name = "tollgate-loadtest", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send load and report throughput, latency percentiles and outcomes.
    Run(Box<RunArgs>),
    /// Draw a run as one self-contained HTML page: load over time, latency, outcomes,
    /// the reconciliation verdict and the launch gates.
    Report {
        /// The run's JSON (`run --out`).
        run: PathBuf,
        /// The reconciliation's JSON (`verify --json`).
        #[arg(long)]
        verify: Option<PathBuf>,
        /// Collector metrics per second (NDJSON lines `{"second": N, "metrics": {…}}`),
        /// replacing what `run --scrape` kept.
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Where to write the page.
        #[arg(long)]
        html: PathBuf,
    },
    /// Compare two runs of the same scenario and seed (e.g. the old build and the new):
    /// per metric the difference with a confidence interval from the per-second
    /// samples, and a verdict. Exits 1 when a declared regression threshold is crossed.
    Compare {
        old: PathBuf,
        new: PathBuf,
        /// Fail when p99 latency got worse by more than this (e.g. 10%).
        #[arg(long, value_parser = parse_percent)]
        max_p99_regression: Option<f64>,
        /// Fail when throughput got worse by more than this (e.g. 5%).
        #[arg(long, value_parser = parse_percent)]
        max_throughput_regression: Option<f64>,
        /// Smallest relative change reported as one (below it: no detectable change).
        #[arg(long, value_parser = parse_percent, default_value = "3%")]
        min_effect: f64,
        /// Compare runs of different scenarios, seeds or load models anyway.
        #[arg(long)]
        force: bool,
        /// Also write the comparison as an HTML page.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Also write the comparison as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Reconcile a run's manifest against a collector's data directory or Kafka topic.
    Verify {
        /// The manifest written by `run --manifest`.
        #[arg(long)]
        manifest: PathBuf,
        /// The collector's data directory (holding events/ and quarantine/). Repeat it to
        /// check several collectors' logs, e.g. a primary and a shadow: each is reported.
        #[arg(long, required_unless_present = "kafka")]
        log: Vec<PathBuf>,
        #[command(flatten)]
        topics: tollgate_log::TopicArgs,
        /// Also write the findings as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Collector base URL. Loopback only (127.0.0.1, [::1], localhost). Repeat it to
    /// spread the load over several collectors: batches go round-robin, and an SDK
    /// retry goes to a different collector than the first send.
    #[arg(long, value_parser = loopback_url, required = true)]
    target: Vec<String>,
    /// Write key sent as the HTTP Basic user.
    #[arg(long, default_value = "dev")]
    write_key: String,
    /// Closed model: this many connections, each sending as soon as it is answered.
    #[arg(long, conflicts_with_all = ["rate", "stages"], default_value_t = 16)]
    connections: usize,
    /// Open model: this many requests per second, latency from the intended send time.
    #[arg(long, conflicts_with = "stages")]
    rate: Option<f64>,
    /// Open model with a linear ramp through stages DURATION:RATE,… (e.g.
    /// 30s:1000,60s:5000 ramps 0→1000 req/s over 30 s, then →5000 over 60 s).
    #[arg(long, value_parser = parse_stages)]
    stages: Option<Stages>,
    /// Stop after this long (e.g. 30s, 2m); with --stages, their total by default.
    #[arg(long, value_parser = humantime::parse_duration, required_unless_present_any = ["requests", "stages"])]
    duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Traffic scenario file (TOML; see config/loadtest-scenario.toml). The flags below
    /// override it.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Events per request [default: 20].
    #[arg(long)]
    batch: Option<usize>,
    /// Seed of the traffic generator: the same seed gives the same traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of requests resent unchanged, as SDK retries do [default: 0.02].
    #[arg(long)]
    retry_rate: Option<f64>,
    /// Share of invalid events [default: 0.01].
    #[arg(long)]
    invalid_rate: Option<f64>,
    /// Share of late events, hours old [default: 0.02].
    #[arg(long)]
    late_rate: Option<f64>,
    /// Share of requests sent with an unknown write key, each must get 401 [default: 0].
    #[arg(long)]
    unknown_key_rate: Option<f64>,
    /// Speak cleartext HTTP/2 (prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Send gzip-compressed bodies.
    #[arg(long)]
    gzip: bool,
    /// For https:// targets: PEM file of the CA (or the self-signed certificate) to
    /// trust. HTTP/2 over TLS is negotiated by ALPN with --http2.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The protocol to speak, in the shape its SDKs send: native (/v1/events), segment
    /// (/v1/batch), posthog (/batch/, the key in the body) or snowplow (tp2 POSTs, app
    /// id `loadtest`, no key) [default: the scenario's, else native].
    #[arg(long, value_parser = clap::value_parser!(String))]
    protocol: Option<String>,
    /// The same as --protocol segment.
    #[arg(long, conflicts_with = "protocol")]
    segment: bool,
    /// Write every request's events and answers here (for `verify`).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fail (exit 1) when p99 latency is above this (e.g. 5ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_p99: Option<Duration>,
    /// Fail when more than this share of requests got no 2xx (e.g. 0.001).
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Fail when fewer events per second than this were sent.
    #[arg(long)]
    min_throughput: Option<f64>,
    /// Scrape the collector's admin metrics every second during the run (e.g.
    /// http://127.0.0.1:9090/metrics) and keep a few series in the report.
    #[arg(long, value_parser = loopback_url)]
    scrape: Option<String>,
}

/// `10%` or `0.1` as a share.
fn parse_percent(text: &str) -> Result<f64, String> {
    let share = match text.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.trim().parse::<f64>(),
    }
    .map_err(|_| format!("{text:?}: expected a share such as 10% or 0.1"))?;
    if share.is_finite() && share >= 0.0 {
        Ok(share)
    } else {
        Err(format!("{text:?}: a share is 0 or more"))
    }
}

/// The stages of one `--stages` value. (A newtype: clap reads an `Option<Vec<_>>` field
/// as a list of values, each parsed alone.)
#[derive(Debug, Clone, PartialEq)]
struct Stages(Vec<Stage>);

/// Parses `30s:1000,60s:5000` into ramp stages.
fn parse_stages(text: &str) -> Result<Stages, String> {
    text.split(',')
        .map(|stage| {
            let (duration, rate) = stage
                .split_once(':')
                .ok_or_else(|| format!("{stage:?}: expected DURATION:RATE, e.g. 30s:1000"))?;
            let duration = humantime::parse_duration(duration.trim())
                .map_err(|e| format!("{stage:?}: {e}"))?;
            let rate: f64 = rate
                .trim()
                .parse()
                .map_err(|_| format!("{stage:?}: the rate is not a number"))?;
            if duration.is_zero() || rate.is_nan() || rate < 0.0 {
                return Err(format!(
                    "{stage:?}: needs a positive duration and a rate >= 0"
                ));
            }
            Ok(Stage { duration, rate })
        })
        .collect::<Result<_, _>>()
        .map(Stages)
}

/// Accepts only URLs whose host is a loopback address: load tests never leave the machine.
fn loopback_url(text: &str) -> Result<String, String> {
    let uri: http::Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("targets are http:// or https:// URLs".into());
    }
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(text.trim_end_matches('/').to_owned())
    } else {
        Err(format!(
            "{host} is not a loopback address; load tests only target this machine"
        ))
    }
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Run(args) => exit(run_command(*args)),
        Command::Report {
            run,
            verify,
            metrics,
            html,
        } => exit(report_command(
            &run,
            verify.as_deref(),
            metrics.as_deref(),
            &html,
        )),
        Command::Compare {
            old,
            new,
            max_p99_regression,
            max_throughput_regression,
            min_effect,
            force,
            html,
            json,
        } => exit(compare_command(
            &old,
            &new,
            &tollgate_loadtest::compare::Options {
                max_p99_regression,
                max_throughput_regression,
                min_effect,
                force,
            },
            html,
            json,
        )),
        Command::Verify {
            manifest,
            log,
            topics,
            json,
        } => {
            let mut sources: Vec<LogSource> = log.into_iter().map(LogSource::Dir).collect();
            sources.extend(topics.source().map(LogSource::Kafka));
            exit(verify_command(&manifest, &sources, json))
        }
    }
}

fn exit(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tollgate-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_command(args: RunArgs) -> anyhow::Result<bool> {
    let run_id = format!("lt{}x{}", std::process::id(), args.seed);
    let config = RunConfig {
        targets: args.target,
        write_key: args.write_key,
        model: match (args.rate, args.stages) {
            (Some(rate), _) => Model::Open { rate },
            // Leaked once per process: the stages live as long as the run.
            (None, Some(Stages(stages))) => Model::Ramp(Vec::leak(stages)),
            (None, None) => Model::Closed {
                connections: args.connections,
            },
        },
        duration: args.duration,
        requests: args.requests,
        seed: args.seed,
        run_id,
        scenario: {
            let mut scenario = match &args.scenario {
                Some(path) => Scenario::load(path).map_err(anyhow::Error::msg)?,
                None => Scenario::default(),
            };
            if let Some(batch) = args.batch {
                scenario.batch_size = batch;
            }
            for (flag, field) in [
                (args.retry_rate, &mut scenario.retry_rate),
                (args.invalid_rate, &mut scenario.invalid_rate),
                (args.late_rate, &mut scenario.late_rate),
                (args.unknown_key_rate, &mut scenario.unknown_key_rate),
            ] {
                if let Some(value) = flag {
                    *field = value;
                }
            }
            if args.segment {
                scenario.protocol = Protocol::Segment;
            }
            if let Some(protocol) = &args.protocol {
                scenario.protocol = protocol.parse().map_err(anyhow::Error::msg)?;
            }
            scenario
        },
        manifest: args.manifest,
        http2: args.http2,
        gzip: args.gzip,
        ca_file: args.ca_file,
        scrape: args.scrape,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let mut report = runtime.block_on(run(config))?;
    let ok = report.judge(&Gates {
        max_p99: args.max_p99,
        max_error_rate: args.max_error_rate,
        min_throughput: args.min_throughput,
    });
    print!("{}", report.human());
    if let Some(path) = args.out {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ok)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a run's JSON", path.display()))
}

fn report_command(
    run: &std::path::Path,
    verify: Option<&std::path::Path>,
    metrics: Option<&std::path::Path>,
    html: &std::path::Path,
) -> anyhow::Result<bool> {
    let mut report: Report = read_json(run)?;
    let verification = match verify {
        Some(path) => Some(read_json(path)?),
        None => None,
    };
    if let Some(path) = metrics {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        tollgate_loadtest::page::merge_metrics(&mut report, &text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let page = tollgate_loadtest::page::render(&report, verification.as_ref());
    std::fs::write(html, page).with_context(|| format!("writing {}", html.display()))?;
    Ok(true)
}

fn compare_command(
    old: &std::path::Path,
    new: &std::path::Path,
    options: &tollgate_loadtest::compare::Options,
    html: Option<PathBuf>,
    json: Option<PathBuf>,
) -> anyhow::Result<bool> {
    let (old, new): (Report, Report) = (read_json(old)?, read_json(new)?);
    let comparison = tollgate_loadtest::compare::compare(&old, &new, options)?;
    print!("{}", comparison.human());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&comparison)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = html {
        std::fs::write(&path, comparison.html())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(comparison.passed())
}

fn verify_command(
    manifest: &std::path::Path,
    logs: &[LogSource],
    json: Option<PathBuf>,
) -> anyhow::Result<bool> {
    let mut all_clean = true;
    let mut findings = serde_json::Map::new();
    for log in logs {
        let v = verify_source(manifest, log)?;
        println!("== {}", log.describe());
        println!(
            "acknowledged {}  logged {}  quarantined {}\nlost {}  duplicated {} (of which SDK retries {})  invalid not quarantined {}  valid but rejected {}",
            v.acknowledged,
            v.logged,
            v.quarantined,
            v.lost,
            v.duplicated,
            v.retries_through,
            v.invalid_not_quarantined,
            v.valid_rejected
        );
        println!(
            "unknown write keys: not refused {}  logged anyway {}",
            v.unknown_key_not_refused, v.unknown_key_logged
        );
        for (kind, ids) in &v.examples {
            println!("  e.g. {kind}: {}", ids.join(", "));
        }
        println!(
            "{}",
            if v.clean() {
                "verify: clean"
            } else {
                "verify: FAILED"
            }
        );
        all_clean &= v.clean();
        findings.insert(log.describe(), serde_json::to_value(&v)?);
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&findings)?)?;
    }
    Ok(all_clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(loopback_url("http://127.0.0.1:8080").is_ok());
        assert!(loopback_url("http://[::1]:8080/").is_ok());
        assert!(loopback_url("http://localhost:1").is_ok());
        assert!(loopback_url("http://10.0.0.5:8080").is_err());
        assert!(loopback_url("http://example.com").is_err());
        assert!(loopback_url("https://127.0.0.1").is_ok());
        assert!(loopback_url("https://10.0.0.5").is_err());
        assert!(loopback_url("ftp://127.0.0.1").is_err());
    }

    #[test]
    fn stages_parse() {
        assert_eq!(
            parse_stages("30s:1000,1m:5000").unwrap().0,
            vec![
                Stage {
                    duration: Duration::from_secs(30),
                    rate: 1000.0
                },
                Stage {
                    duration: Duration::from_secs(60),
                    rate: 5000.0
                },
            ]
        );
        assert!(parse_stages("30s").is_err());
        assert!(parse_stages("0s:10").is_err());
        assert!(parse_stages("5s:fast").is_err());
        assert!(parse_stages("5s:-1").is_err());
    }

    #[test]
    fn closed_and_open_models_are_exclusive() {
        let parse = |args: &[&str]| Args::try_parse_from(args);
        assert!(
            parse(&[
                "t",
                "run",
                "--target",
                "http://127.0.0.1:1",
                "--requests",
                "5"
            ])
            .is_ok()
        );
        assert!(
            parse(&[
                "t",
                "run",
                "--target",
                "http://127.0.0.1:1",
                "--rate",
                "50",
                "--connections",
                "3",
                "--requests",
                "5"
            ])
            .is_err()
        );
        assert!(
            parse(&["t", "run", "--target", "http://127.0.0.1:1"]).is_err(),
            "needs a bound"
        );
        // A ramp is bound by its stages, and reaches the run as its stages.
        let ramp = parse(&[
            "t",
            "run",
            "--target",
            "http://127.0.0.1:1",
            "--stages",
            "5s:10,5s:20",
        ])
        .unwrap();
        let Command::Run(run) = ramp.command else {
            panic!("a run")
        };
        assert_eq!(run.stages.map(|s| s.0.len()), Some(2));
        assert!(
            parse(&[
                "t",
                "run",
                "--target",
                "http://127.0.0.1:1",
                "--duration",
                "2s",
                "--max-p99",
                "5ms"
            ])
            .is_ok()
        );
    }
}
