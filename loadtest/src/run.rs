//! Sending the traffic: a closed model (N connections as fast as they can) or an open
//! model (a constant arrival rate, latency measured from each request's *intended* send
//! time, so a slow server cannot hide its queueing: no coordinated omission).
//!
//! Every request's events and the answer for each go to the manifest, which `verify`
//! reconciles against the collector's log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::generate::{Batch, Generator, Protocol, Scenario};
use crate::report::{Outcomes, Report, RunInfo, Second, StageMark};

/// How load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Model {
    /// `connections` workers, each sending as soon as its previous answer arrived.
    Closed { connections: usize },
    /// A constant rate of requests per second, whatever the answers do.
    Open { rate: f64 },
    /// Open model whose rate ramps linearly through stages (`30s:1000,60s:5000`: from
    /// 0 to 1000/s over 30 s, then to 5000/s over 60 s).
    Ramp(&'static [Stage]),
}

/// One ramp stage: reach `rate` requests/s at the end of `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub rate: f64,
}

/// The rate `elapsed` into a ramp, or `None` once every stage is over.
pub fn ramp_rate(stages: &[Stage], elapsed: Duration) -> Option<f64> {
    let mut start = Duration::ZERO;
    let mut from = 0.0;
    for stage in stages {
        let end = start + stage.duration;
        if elapsed < end {
            let progress = (elapsed - start).as_secs_f64() / stage.duration.as_secs_f64().max(1e-9);
            return Some(from + (stage.rate - from) * progress);
        }
        start = end;
        from = stage.rate;
    }
    None
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Collector base URLs (`http://127.0.0.1:8080`). With several, new batches go
    /// round-robin and an SDK retry goes to a different collector than its first send,
    /// as it would behind a load balancer.
    pub targets: Vec<String>,
    pub write_key: String,
    pub model: Model,
    /// Stop after this long …
    pub duration: Option<Duration>,
    /// … or after this many requests, whichever comes first.
    pub requests: Option<u64>,
    pub seed: u64,
    pub run_id: String,
    pub scenario: Scenario,
    /// Where to write the manifest (NDJSON, one line per request).
    pub manifest: Option<PathBuf>,
    /// Speak HTTP/2 (cleartext, prior knowledge) instead of HTTP/1.1.
    pub http2: bool,
    /// Send bodies gzip-compressed.
    pub gzip: bool,
    /// PEM file of the CA (or self-signed certificate) that https:// targets present.
    pub ca_file: Option<PathBuf>,
    /// A collector's admin `/metrics` URL to scrape every second during the run.
    pub scrape: Option<String>,
}

/// One manifest line: a request, its events, and what the collector said of each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub seq: u64,
    pub retry: bool,
    /// Sent with an unknown write key on purpose.
    #[serde(default)]
    pub bad_key: bool,
    /// HTTP status, or 0 when no answer came (connection error).
    pub status: u16,
    pub events: Vec<ManifestEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEvent {
    pub id: String,
    pub valid: bool,
    /// `accepted`, `duplicate`, `rejected`, `retry`, or `none` (no per-event answer).
    pub outcome: String,
}

struct Shared {
    generator: Mutex<Generator>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    urls: Vec<http::Uri>,
    auth: http::HeaderValue,
    bad_auth: http::HeaderValue,
    /// Decides where the write key goes (see [`send_one`]).
    protocol: Protocol,
    gzip: bool,
    started: Instant,
    totals: Mutex<Totals>,
    manifest: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

struct Totals {
    latency: Histogram<u64>,
    outcomes: Outcomes,
    /// One bucket per second of the run.
    series: Vec<Second>,
    /// Latencies of the seconds still being answered, turned into percentiles once
    /// they are over.
    open_seconds: std::collections::BTreeMap<usize, Histogram<u64>>,
}

impl Totals {
    /// Turns the latency histograms of seconds before `before` into percentiles.
    fn close_seconds(&mut self, before: usize) {
        while let Some(entry) = self.open_seconds.first_entry() {
            if *entry.key() >= before {
                break;
            }
            let (second, histogram) = entry.remove_entry();
            self.series[second].latency = Some(crate::report::Latency::of(&histogram));
        }
    }
}

/// The run could not start or finish writing its manifest.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("give at least one target")]
    NoTarget,
    #[error("target {target:?}: {source}")]
    Target {
        target: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("the write key cannot be sent in a header")]
    WriteKey,
    #[error("CA file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("manifest {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a load worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

impl Model {
    /// The mean rate asked for during second `second` of the run (none for the closed
    /// model, which asks for no rate).
    pub fn rate_during(&self, second: usize) -> Option<f64> {
        match self {
            Model::Closed { .. } => None,
            Model::Open { rate } => Some(*rate),
            Model::Ramp(stages) => {
                // The mean of a piecewise-linear rate over the second, from ten samples.
                let samples: Vec<f64> = (0..10)
                    .map(|i| Duration::from_secs_f64(second as f64 + (f64::from(i) + 0.5) / 10.0))
                    .map(|t| ramp_rate(stages, t).unwrap_or(0.0))
                    .collect();
                Some(samples.iter().sum::<f64>() / samples.len() as f64)
            }
        }
    }

    /// `closed:<connections>`, `open:<rate>/s` or `ramp:<duration>-><rate>/s,…`.
    pub fn label(&self) -> String {
        match self {
            Model::Closed { connections } => format!("closed:{connections}"),
            Model::Open { rate } => format!("open:{rate}/s"),
            Model::Ramp(stages) => format!(
                "ramp:{}",
                stages
                    .iter()
                    .map(|s| format!("{}s->{}/s", s.duration.as_secs_f64(), s.rate))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// Runs the load and returns the report.
///
/// # Errors
/// No or a bad target URL, an unreadable CA file, or an unwritable manifest.
pub async fn run(config: RunConfig) -> Result<Report, RunError> {
    let path = config.scenario.protocol.path();
    if config.targets.is_empty() {
        return Err(RunError::NoTarget);
    }
    let urls = config
        .targets
        .iter()
        .map(|target| {
            format!("{}{path}", target.trim_end_matches('/'))
                .parse()
                .map_err(|source| RunError::Target {
                    target: target.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<http::Uri>, _>>()?;
    let auth = http::HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", config.write_key))
    ))
    .map_err(|_| RunError::WriteKey)?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    // http:// targets go straight over TCP; https:// ones through rustls (ALPN h2 with
    // --http2, else http/1.1).
    let tls = HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(config.ca_file.as_deref())?)
        .https_or_http();
    let connector = if config.http2 {
        tls.enable_http2().wrap_connector(http)
    } else {
        tls.enable_http1().wrap_connector(http)
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .http2_only(config.http2)
        .build(connector);
    let bad_auth = http::HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("wk_not_a_real_key:")
    ))
    .expect("a base64 header value");
    let manifest_error = |path: &PathBuf| {
        let path = path.clone();
        move |source| RunError::Manifest { path, source }
    };
    let manifest = match &config.manifest {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(manifest_error(path))?;
            Some(Mutex::new(std::io::BufWriter::new(file)))
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        generator: Mutex::new(
            Generator::new(config.run_id.clone(), config.seed, config.scenario.clone())
                .with_write_key(config.write_key.clone()),
        ),
        protocol: config.scenario.protocol,
        client,
        urls,
        auth,
        bad_auth,
        gzip: config.gzip,
        started: Instant::now(),
        totals: Mutex::new(Totals {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            outcomes: Outcomes::default(),
            series: Vec::new(),
            open_seconds: Default::default(),
        }),
        manifest,
    });
    let started = Instant::now();
    let progress = progress_bar(&config, shared.clone());
    let scraper = match &config.scrape {
        Some(url) => Some(crate::scrape::start(url, shared.client.clone(), started)?),
        None => None,
    };
    let deadline = config.duration.map(|d| started + d);
    let budget = config.requests.unwrap_or(u64::MAX);
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // May a request due at `due` still be sent? The open model asks with its intended
    // send times, so how many requests it sends is set by the schedule, not by how
    // punctually the machine woke it up.
    let take = {
        let issued = issued.clone();
        move |due: Instant| {
            deadline.is_none_or(|d| due < d)
                && issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < budget
        }
    };

    match config.model {
        Model::Closed { connections } => {
            let mut workers = Vec::new();
            for _ in 0..connections.max(1) {
                let (shared, take) = (shared.clone(), take.clone());
                workers.push(tokio::spawn(async move {
                    while take(Instant::now()) {
                        let intended = Instant::now();
                        send_one(&shared, intended).await;
                    }
                }));
            }
            for worker in workers {
                worker.await?;
            }
        }
        Model::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1e-9));
            let mut next = started;
            let mut inflight = tokio::task::JoinSet::new();
            while take(next) {
                tokio::time::sleep_until(next.into()).await;
                let (shared, intended) = (shared.clone(), next);
                inflight.spawn(async move { send_one(&shared, intended).await });
                next += interval;
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        }
        Model::Ramp(stages) => {
            // The rate changes continuously, so the schedule is built in 10 ms ticks: each
            // tick adds rate × 10 ms of credit, and every whole request of credit is sent
            // at its own intended time, spread evenly over the tick.
            const TICK: Duration = Duration::from_millis(10);
            let mut tick = started;
            let mut credit = 0.0;
            let mut inflight = tokio::task::JoinSet::new();
            'ramp: while let Some(rate) = ramp_rate(stages, tick - started) {
                credit += rate * TICK.as_secs_f64();
                let due = credit.floor() as u32;
                credit -= f64::from(due);
                for i in 0..due {
                    let intended = tick + TICK * i / due;
                    if !take(intended) {
                        break 'ramp;
                    }
                    tokio::time::sleep_until(intended.into()).await;
                    let shared = shared.clone();
                    inflight.spawn(async move { send_one(&shared, intended).await });
                }
                tick += TICK;
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        }
    }
    let elapsed = started.elapsed();
    if let Some((updater, bar)) = progress {
        updater.abort();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
    let scraped = match scraper {
        Some(scraper) => scraper.stop().await,
        None => Vec::new(),
    };
    if let (Some(manifest), Some(path)) = (&shared.manifest, &config.manifest) {
        manifest
            .lock()
            .expect("manifest lock")
            .flush()
            .map_err(manifest_error(path))?;
    }
    let mut totals = shared.totals.lock().expect("totals lock");
    totals.close_seconds(usize::MAX);
    let run = RunInfo {
        run_id: config.run_id.clone(),
        target: config.targets.join(","),
        model: config.model.label(),
    };
    let mut report = Report::new(&run, elapsed, &totals.latency, totals.outcomes.clone());
    report.series = totals.series.clone();
    // Seconds the scraper saw but no answer came in.
    if report.series.len() < scraped.len() {
        report.series.resize(scraped.len(), Second::default());
    }
    for (second, metrics) in report.series.iter_mut().zip(scraped) {
        second.metrics = metrics;
    }
    for (i, second) in report.series.iter_mut().enumerate() {
        second.target_rate = config.model.rate_during(i);
    }
    report.seed = config.seed;
    report.scenario = Some(config.scenario.clone());
    if let Model::Ramp(stages) = config.model {
        let mut end = 0.0;
        report.stages = stages
            .iter()
            .map(|s| {
                end += s.duration.as_secs_f64();
                StageMark {
                    end_s: end,
                    rate: s.rate,
                }
            })
            .collect();
    }
    Ok(report)
}

/// TLS client settings trusting only `ca_file` (load tests target this machine, whose
/// certificates no public root signs).
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, RunError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| RunError::CaFile {
            path: path.to_owned(),
            source,
        };
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.into()))? {
            let cert = cert.map_err(|e| failed(e.into()))?;
            roots.add(cert).map_err(|e| failed(e.into()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the aws-lc-rs provider supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth())
}

async fn send_one(shared: &Shared, intended: Instant) {
    let batch = shared
        .generator
        .lock()
        .expect("generator lock")
        .next_batch(OffsetDateTime::now_utc());
    // Native and Segment requests carry the key in a header; PostHog bodies carry it
    // themselves (the bad one too); Snowplow trackers send none, so a request to refuse
    // carries an unknown key in a header.
    let auth = match (shared.protocol, batch.bad_key) {
        (Protocol::Native | Protocol::Segment, false) => Some(&shared.auth),
        (Protocol::Native | Protocol::Segment | Protocol::Snowplow, true) => Some(&shared.bad_auth),
        (Protocol::PostHog, _) | (Protocol::Snowplow, false) => None,
    };
    // The first send of batch n goes to target n mod N, its retries to the next one.
    let target = (batch.seq + u64::from(batch.retry)) as usize % shared.urls.len();
    let mut request = http::Request::post(shared.urls[target].clone())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        request = request.header(http::header::AUTHORIZATION, auth.clone());
    }
    let body = if shared.gzip {
        request = request.header(http::header::CONTENT_ENCODING, "gzip");
        gzip(&batch.body)
    } else {
        batch.body.clone()
    };
    let request = request.body(Full::new(body)).expect("a valid request");
    let answer = match shared.client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            Some((status, body.unwrap_or_default()))
        }
        Err(_) => None,
    };
    let latency = intended.elapsed();
    record(shared, &batch, answer, latency);
}

fn record(shared: &Shared, batch: &Batch, answer: Option<(u16, Bytes)>, latency: Duration) {
    let status = answer.as_ref().map_or(0, |(s, _)| *s);
    let answer_body = answer.as_ref().and_then(|(_, body)| {
        serde_json::from_slice::<tollgate_event::wire::AnswerView<'_>>(body).ok()
    });
    let results: Vec<&str> = answer_body
        .as_ref()
        .map(|a| a.results.iter().map(|r| r.status.as_str()).collect())
        .unwrap_or_default();
    let events: Vec<ManifestEvent> = batch
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| ManifestEvent {
            id: e.event_id.clone(),
            valid: e.valid,
            outcome: results.get(i).copied().unwrap_or("none").to_owned(),
        })
        .collect();
    {
        let mut totals = shared.totals.lock().expect("totals lock");
        let micros = latency.as_micros().clamp(1, 60_000_000) as u64;
        let _ = totals.latency.record(micros);
        totals
            .outcomes
            .count(status, events.iter().map(|e| e.outcome.as_str()));
        let second = shared.started.elapsed().as_secs() as usize;
        if totals.series.len() <= second {
            totals.series.resize(second + 1, Second::default());
        }
        let bucket = &mut totals.series[second];
        bucket.requests += 1;
        bucket.events += events.len() as u64;
        bucket.errors += u64::from(!(200..300).contains(&status));
        bucket.max_latency_us = bucket.max_latency_us.max(micros);
        *bucket.statuses.entry(status).or_default() += 1;
        for event in &events {
            match bucket.outcomes.get_mut(&event.outcome) {
                Some(n) => *n += 1,
                None => {
                    bucket.outcomes.insert(event.outcome.clone(), 1);
                }
            }
        }
        let _ = totals
            .open_seconds
            .entry(second)
            .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"))
            .record(micros);
        // Answers are counted in the second they arrive: two seconds back is over.
        totals.close_seconds(second.saturating_sub(1));
    }
    if let Some(manifest) = &shared.manifest {
        let entry = ManifestEntry {
            seq: batch.seq,
            retry: batch.retry,
            bad_key: batch.bad_key,
            status,
            events,
        };
        let mut out = manifest.lock().expect("manifest lock");
        let _ = serde_json::to_writer(&mut *out, &entry);
        let _ = out.write_all(b"\n");
    }
}

/// Progress on stderr: a live bar on a terminal (rate, errors, ETA); elsewhere (a CI log,
/// a file) one line every 10 s.
fn progress_bar(
    config: &RunConfig,
    shared: Arc<Shared>,
) -> Option<(tokio::task::JoinHandle<()>, Option<indicatif::ProgressBar>)> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        let updater = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let (requests, errors) = sent_and_failed(&shared);
                let rate = (requests - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), requests);
                eprintln!(
                    "{:>5} s: {}",
                    shared.started.elapsed().as_secs(),
                    progress_message(rate, requests, errors)
                );
            }
        });
        return Some((updater, None));
    }
    let (length, by_time) = match (config.duration, config.requests) {
        (Some(d), _) => (d.as_secs().max(1), true),
        (None, Some(n)) => (n, false),
        (None, None) => (0, true),
    };
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} (eta {eta})")
            .expect("a valid template"),
    );
    let shown = bar.clone();
    let updater = tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (requests, errors) = sent_and_failed(&shared);
            let rate = (requests - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), requests);
            bar.set_position(if by_time {
                shared.started.elapsed().as_secs()
            } else {
                requests
            });
            bar.set_message(progress_message(rate, requests, errors));
        }
    });
    Some((updater, Some(shown)))
}

/// Requests answered so far, and those without a 2xx answer.
fn sent_and_failed(shared: &Shared) -> (u64, u64) {
    let totals = shared.totals.lock().expect("totals lock");
    let requests: u64 = totals.outcomes.statuses.values().sum();
    let errors: u64 = totals
        .outcomes
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    (requests, errors)
}

/// The progress bar's message.
fn progress_message(rate: f64, requests: u64, errors: u64) -> String {
    let share = if requests == 0 {
        0.0
    } else {
        errors as f64 * 100.0 / requests as f64
    };
    format!("{rate:.0} req/s, {requests} sent, {errors} errors ({share:.2} %)")
}

fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(body)
        .expect("writing to a Vec cannot fail");
    Bytes::from(encoder.finish().expect("writing to a Vec cannot fail"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_messages() {
        assert_eq!(
            progress_message(1234.4, 5000, 5),
            "1234 req/s, 5000 sent, 5 errors (0.10 %)"
        );
        assert_eq!(
            progress_message(0.0, 0, 0),
            "0 req/s, 0 sent, 0 errors (0.00 %)"
        );
    }

    #[test]
    fn ramps_are_linear_within_a_stage() {
        let stages = [
            Stage {
                duration: Duration::from_secs(10),
                rate: 100.0,
            },
            Stage {
                duration: Duration::from_secs(10),
                rate: 300.0,
            },
        ];
        let at = |s: f64| ramp_rate(&stages, Duration::from_secs_f64(s));
        assert_eq!(at(0.0), Some(0.0));
        assert_eq!(at(5.0), Some(50.0));
        assert_eq!(at(10.0), Some(100.0));
        assert_eq!(at(15.0), Some(200.0));
        assert_eq!(at(20.0), None);
    }
}
