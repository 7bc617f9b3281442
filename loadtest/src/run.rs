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
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::generate::{Batch, Generator, Scenario};
use crate::report::{Outcomes, Report};

/// How load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Model {
    /// `connections` workers, each sending as soon as its previous answer arrived.
    Closed { connections: usize },
    /// A constant rate of requests per second, whatever the answers do.
    Open { rate: f64 },
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Collector base URL (`http://127.0.0.1:8080`).
    pub target: String,
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
}

/// One manifest line: a request, its events, and what the collector said of each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub seq: u64,
    pub retry: bool,
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

/// The part of a native answer the run reads: each event's status.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    results: Vec<AnswerResult<'a>>,
}

#[derive(Deserialize)]
struct AnswerResult<'a> {
    status: &'a str,
}

struct Shared {
    generator: Mutex<Generator>,
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    auth: http::HeaderValue,
    totals: Mutex<Totals>,
    manifest: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

struct Totals {
    latency: Histogram<u64>,
    outcomes: Outcomes,
}

/// Runs the load and returns the report.
///
/// # Errors
/// A bad target URL or an unwritable manifest.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let url: http::Uri = format!("{}/v1/events", config.target.trim_end_matches('/')).parse()?;
    let auth = http::HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", config.write_key))
    ))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector);
    let manifest = match &config.manifest {
        Some(path) => Some(Mutex::new(std::io::BufWriter::new(std::fs::File::create(
            path,
        )?))),
        None => None,
    };
    let shared = Arc::new(Shared {
        generator: Mutex::new(Generator::new(
            config.run_id.clone(),
            config.seed,
            config.scenario.clone(),
        )),
        client,
        url,
        auth,
        totals: Mutex::new(Totals {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            outcomes: Outcomes::default(),
        }),
        manifest,
    });
    let started = Instant::now();
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
            let mut next = Instant::now();
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
    }
    let elapsed = started.elapsed();
    if let Some(manifest) = &shared.manifest {
        manifest.lock().expect("manifest lock").flush()?;
    }
    let totals = shared.totals.lock().expect("totals lock");
    Ok(Report::new(
        &config,
        elapsed,
        &totals.latency,
        totals.outcomes.clone(),
    ))
}

async fn send_one(shared: &Shared, intended: Instant) {
    let batch = shared
        .generator
        .lock()
        .expect("generator lock")
        .next_batch(OffsetDateTime::now_utc());
    let request = http::Request::post(shared.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, shared.auth.clone())
        .body(Full::new(batch.body.clone()))
        .expect("a valid request");
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
    let answer_body = answer
        .as_ref()
        .and_then(|(_, body)| serde_json::from_slice::<Answer<'_>>(body).ok());
    let results: Vec<&str> = answer_body
        .as_ref()
        .map(|a| a.results.iter().map(|r| r.status).collect())
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
    }
    if let Some(manifest) = &shared.manifest {
        let entry = ManifestEntry {
            seq: batch.seq,
            retry: batch.retry,
            status,
            events,
        };
        let mut out = manifest.lock().expect("manifest lock");
        let _ = serde_json::to_writer(&mut *out, &entry);
        let _ = out.write_all(b"\n");
    }
}
