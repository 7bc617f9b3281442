//! `tollgate-shadow-proxy`: sits in front of two collector versions during a logging
//! migration. The client always gets the primary's answer, unchanged; a copy of each
//! request goes to the shadow through a bounded queue with its own timeout, so a slow or
//! dead shadow never slows the primary path (copies are dropped and counted instead).
//!
//! # Layout
//! - [`ProxyConfig`] and [`run`]: the listener, the primary path (bodies streamed
//!   through a `tee` that keeps the copy), the mirror queue and the shadow thread;
//! - [`compare`]: per-event outcomes of every side, counted per event name, segment and
//!   bridge, and the bridge ratio new/old with a confidence interval and the A/A floor;
//! - [`mapping`]: renames, splits and merges between old and new names;
//! - [`offline`]: the same questions over what two collectors logged;
//! - [`file`]: the configuration file.

pub mod compare;
pub mod file;
pub mod mapping;
pub mod offline;
mod render;
mod tee;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compare::{
    Comparison, Dropped, EXPLAIN_HEADER, OUTCOMES_HEADER, Reply, SOURCE_HEADER, Side,
};
use crate::tee::{Copied, Tee};

pub use tollgate_event::wire::SHADOW_HEADER;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The collector whose answers clients receive (`http://host:port`).
    pub primary: String,
    /// The collector that receives copies; `None` mirrors nothing.
    pub shadow: Option<String>,
    /// A second replica of the primary's version that receives the same copies: old vs
    /// old is the noise floor new vs old must exceed to be flagged (A/A).
    pub replica: Option<String>,
    /// Renames, splits and merges between old and new event names.
    pub mapping: mapping::Mapping,
    /// Copies waiting for the shadow; when full, new copies are dropped. With a
    /// `sample_rate` below 1 the shadow thread decides sampling (it parses the body), so
    /// unsampled copies pass through this queue too, briefly.
    pub queue: usize,
    /// Bytes of bodies waiting for the shadow; past this, new copies are dropped too
    /// (so large bodies cannot make a count-bounded queue hold gigabytes).
    pub queue_bytes: usize,
    /// Copies in flight to the shadow at once.
    pub shadow_concurrency: usize,
    /// Longest the shadow may take for one copy.
    pub shadow_timeout: Duration,
    /// Largest body copied to the shadow; a larger one still reaches the primary whole
    /// (the collector's own limit is the real one), only its copy is dropped.
    pub max_body: usize,
    /// A discontinuity is a bridge-ratio interval that excludes 1 ± this.
    pub tolerance: f64,
    /// Share of traffic mirrored, chosen by a stable hash of `sample_key`.
    pub sample_rate: f64,
    /// The event field whose hash decides sampling (`user_id`, `device_id` or
    /// `event_id`), read from a request's first event: a sampled user is mirrored whole.
    pub sample_key: String,
    /// Serve clients over TLS with this certificate (reloaded on SIGHUP or change).
    pub tls: Option<tollgate_edge::TlsFiles>,
    /// CPU priority of the shadow thread (copying, sending, comparing).
    pub shadow_priority: ShadowPriority,
    /// Most rows per comparison table (events, segments, event × segment): their keys
    /// come from clients, so past this new keys are counted under `other`.
    pub max_rows: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// A client connection on which nothing moves for this long is closed.
    pub idle_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            primary: "http://127.0.0.1:8080".into(),
            shadow: None,
            replica: None,
            mapping: mapping::Mapping::default(),
            queue: 10_000,
            queue_bytes: 256 << 20,
            shadow_concurrency: 64,
            shadow_timeout: Duration::from_secs(2),
            max_body: 4 << 20,
            tolerance: 0.05,
            sample_rate: 1.0,
            sample_key: "user_id".into(),
            tls: None,
            shadow_priority: ShadowPriority::Idle,
            max_rows: compare::DEFAULT_MAX_ROWS,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// One mirrored request, with the primary's answer to compare against.
struct Copy {
    method: http::Method,
    path: http::uri::PathAndQuery,
    headers: http::HeaderMap,
    body: Bytes,
    primary_status: StatusCode,
    primary_headers: http::HeaderMap,
    primary_body: Bytes,
}

/// What clients receive: the primary's answer as it streams in, or the proxy's own.
type Answer = Either<Tee<Incoming>, Full<Bytes>>;

struct Proxy {
    config: ProxyConfig,
    client: Client<HttpConnector, Tee<Incoming>>,
    primary: http::Uri,
    copies: Option<mpsc::Sender<Copy>>,
    /// Body bytes in the copy queue.
    queued_bytes: Arc<AtomicUsize>,
    comparison: Arc<Comparison>,
}

impl Copy {
    fn size(&self) -> usize {
        self.body.len() + self.primary_body.len()
    }
}

/// Serves clients on `listener`, and the report and metrics on `admin` (never on the
/// client-facing port), until `shutdown` resolves; then drains open requests.
///
/// # Errors
/// A primary or shadow URL that cannot be parsed.
pub async fn run(
    config: ProxyConfig,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let comparison = Arc::new(Comparison::with_max_rows(
        config.tolerance,
        &config.mapping,
        config.max_rows,
    ));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let copies = match &config.shadow {
        Some(shadow) => {
            let shadow: http::Uri = shadow.parse()?;
            let replica = config
                .replica
                .as_deref()
                .map(str::parse::<http::Uri>)
                .transpose()?;
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            spawn_mirror(
                rx,
                shadow,
                replica,
                config.clone(),
                comparison.clone(),
                queued_bytes.clone(),
            )?;
            Some(tx)
        }
        None => None,
    };
    let proxy = Arc::new(Proxy {
        primary: config.primary.parse()?,
        config,
        client,
        copies,
        queued_bytes,
        comparison,
    });
    let token = CancellationToken::new();
    let plain = tollgate_edge::ServeOptions {
        header_read_timeout: proxy.config.header_read_timeout,
        idle_timeout: proxy.config.idle_timeout,
        max_connections: proxy.config.max_connections,
        ..tollgate_edge::ServeOptions::default()
    };
    let mut options = plain.clone();
    if let Some(files) = &proxy.config.tls {
        let store = tollgate_edge::CertStore::load(files.clone())?;
        store
            .clone()
            .watch(Duration::from_secs(10), token.child_token());
        options.tls = Some(store.server_config()?);
    }
    let mut servers = Vec::new();
    if let Some(admin) = admin {
        let comparison = proxy.comparison.clone();
        servers.push(tokio::spawn(tollgate_edge::serve(
            admin,
            plain,
            token.clone(),
            move |_peer| {
                let comparison = comparison.clone();
                hyper::service::service_fn(move |req: Request<Incoming>| {
                    let answer = admin_answer(&comparison, req.uri().path());
                    async move { Ok::<_, Infallible>(answer) }
                })
            },
        )));
    }
    servers.push(tokio::spawn(tollgate_edge::serve(
        listener,
        options,
        token.clone(),
        move |_peer| {
            let proxy = proxy.clone();
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req).await) }
            })
        },
    )));
    shutdown.await;
    tracing::info!("shutting down: no new connections, draining open requests");
    token.cancel();
    for server in servers {
        let _ = server.await;
    }
    Ok(())
}

/// The admin listener's answers: the comparison as JSON, HTML and Prometheus text.
fn admin_answer(comparison: &Comparison, path: &str) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match path {
        "/shadow/report" => (
            StatusCode::OK,
            serde_json::to_vec_pretty(&comparison.report()).expect("a report serializes"),
            "application/json",
        ),
        "/shadow/report.html" => (
            StatusCode::OK,
            comparison.report().html().into_bytes(),
            "text/html; charset=utf-8",
        ),
        "/metrics" => (
            StatusCode::OK,
            comparison.report().prometheus().into_bytes(),
            "text/plain; version=0.0.4",
        ),
        "/healthz" => (
            StatusCode::OK,
            br#"{"status":"ok"}"#.to_vec(),
            "application/json",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"not_found","message":"no such route"}}"#.to_vec(),
            "application/json",
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

impl Proxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<Answer> {
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut headers = forwardable(&parts.headers);
        // The request streams to the primary; a copy of it is kept only when mirroring.
        let mirroring = self.copies.is_some();
        // Both sides are asked what they did with each event (and under which region
        // and source); the client gets the primary's answer without it unless it asked.
        let client_asked = headers.contains_key(EXPLAIN_HEADER);
        if mirroring && !client_asked {
            headers.insert(EXPLAIN_HEADER, http::HeaderValue::from_static("1"));
        }
        let (request_copy, request_copied) = tokio::sync::oneshot::channel();
        let limit = if mirroring { self.config.max_body } else { 0 };
        let body = Tee::new(body, limit, move |copied| {
            let _ = request_copy.send(copied);
        });
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = upstream_uri(&self.primary, &path);
        let copy_headers = if mirroring {
            headers.clone()
        } else {
            http::HeaderMap::new()
        };
        *request.headers_mut() = headers;
        let started = std::time::Instant::now();
        let response = match self.client.request(request).await {
            Ok(response) => {
                self.comparison.latency(Side::Primary, started.elapsed());
                response
            }
            Err(e) => {
                tracing::warn!(error = %e, "primary unreachable");
                self.comparison.primary_error();
                return respond(
                    StatusCode::BAD_GATEWAY,
                    Bytes::from_static(br#"{"error":{"code":"primary_unavailable","message":"the primary collector did not answer"}}"#),
                    "application/json",
                );
            }
        };
        let (mut parts_back, body) = response.into_parts();
        parts_back.headers.remove(http::header::TRANSFER_ENCODING);
        parts_back.headers.remove(http::header::CONNECTION);
        let status = parts_back.status;
        let body = match &self.copies {
            Some(copies) => {
                let primary_headers = parts_back.headers.clone();
                if !client_asked {
                    parts_back.headers.remove(OUTCOMES_HEADER);
                    parts_back.headers.remove(SOURCE_HEADER);
                }
                let (copies, comparison) = (copies.clone(), self.comparison.clone());
                let (queued_bytes, queue_bytes) =
                    (self.queued_bytes.clone(), self.config.queue_bytes);
                let (method, path) = (parts.method, path);
                // When the primary's answer has streamed to the client, the copy (request
                // and answer) is queued for the shadow; never waits, a full queue drops it.
                Tee::new(body, self.config.max_body, move |answer| {
                    let mut request_copied = request_copied;
                    let copy = match (request_copied.try_recv(), answer) {
                        (Ok(Copied::Whole(body)), Copied::Whole(primary_body)) => Copy {
                            method,
                            path,
                            headers: copy_headers,
                            body,
                            primary_status: status,
                            primary_headers,
                            primary_body,
                        },
                        (Ok(Copied::TooLarge), _) | (_, Copied::TooLarge) => {
                            return comparison.dropped(Dropped::TooLarge);
                        }
                        _ => return comparison.dropped(Dropped::Incomplete),
                    };
                    let size = copy.size();
                    if queued_bytes.fetch_add(size, Ordering::Relaxed) + size > queue_bytes {
                        queued_bytes.fetch_sub(size, Ordering::Relaxed);
                        return comparison.dropped(Dropped::QueueFull);
                    }
                    if copies.try_send(copy).is_err() {
                        queued_bytes.fetch_sub(size, Ordering::Relaxed);
                        comparison.dropped(Dropped::QueueFull);
                    }
                })
            }
            None => Tee::new(body, 0, |_| {}),
        };
        Response::from_parts(parts_back, Either::Left(body))
    }
}

fn upstream_uri(base: &http::Uri, path: &http::uri::PathAndQuery) -> http::Uri {
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path.clone());
    http::Uri::from_parts(parts).expect("an upstream URL with a request's path is a URL")
}

/// Starts the shadow side on a thread of its own, with its own runtime, connection
/// pool and a lower CPU priority: copying, sending and comparing never take a worker
/// (or a core's time) from the primary path, and on a busy machine they yield first.
fn spawn_mirror(
    rx: mpsc::Receiver<Copy>,
    shadow: http::Uri,
    replica: Option<http::Uri>,
    config: ProxyConfig,
    comparison: Arc<Comparison>,
    queued_bytes: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tollgate-shadow".into())
        .spawn(move || {
            lower_priority(config.shadow_priority);
            runtime.block_on(mirror(
                rx,
                shadow,
                replica,
                config,
                comparison,
                queued_bytes,
            ));
        })?;
    Ok(())
}

/// How the shadow thread shares a busy CPU with the primary path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowPriority {
    /// Linux `SCHED_IDLE`: runs only on CPU time nothing else wants; under saturation
    /// copies wait in the queue and are dropped there, the primary path keeps its CPU.
    Idle,
    /// Nice 10: a tenth of the primary path's share when both want the CPU.
    Low,
    /// The primary path's own priority.
    Normal,
}

/// Lowers the calling thread's CPU priority (Linux keeps one per thread).
fn lower_priority(priority: ShadowPriority) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: both calls only read the arguments given; on Linux `0` names the
        // calling thread, and `param` lives across the call.
        let failed = match priority {
            ShadowPriority::Normal => false,
            ShadowPriority::Low => unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) != 0 },
            ShadowPriority::Idle => {
                let param = libc::sched_param { sched_priority: 0 };
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 }
            }
        };
        if failed {
            tracing::warn!(?priority, error = %std::io::Error::last_os_error(), "could not lower the shadow thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

/// What an upstream answered to a copy.
struct Answered {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answered {
    fn reply(&self) -> Reply<'_> {
        Reply {
            status: self.status,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// Sends a copy to an upstream within `timeout` and reads its whole answer; a failure
/// is counted as `<side>_error` or `<side>_timeout`.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &http::Uri,
    copy: &Copy,
    side: Side,
    timeout: Duration,
    comparison: &Comparison,
) -> Option<Answered> {
    let started = std::time::Instant::now();
    let (name, failed, timed_out) = if side == Side::Replica {
        ("replica", Dropped::ReplicaError, Dropped::ReplicaTimeout)
    } else {
        ("shadow", Dropped::ShadowError, Dropped::ShadowTimeout)
    };
    match tokio::time::timeout(timeout, send_once(client, base, copy)).await {
        Ok(Ok(answered)) => {
            comparison.latency(side, started.elapsed());
            Some(answered)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, side = name, "copy failed");
            comparison.dropped(failed);
            None
        }
        Err(_) => {
            comparison.dropped(timed_out);
            None
        }
    }
}

async fn send_once(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &http::Uri,
    copy: &Copy,
) -> anyhow::Result<Answered> {
    let mut request = Request::new(Full::new(copy.body.clone()));
    *request.method_mut() = copy.method.clone();
    *request.uri_mut() = upstream_uri(base, &copy.path);
    *request.headers_mut() = copy.headers.clone();
    request
        .headers_mut()
        .insert(SHADOW_HEADER, http::HeaderValue::from_static("1"));
    let (parts, body) = client.request(request).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answered {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Drains the copy queue into the shadow, `shadow_concurrency` at a time.
async fn mirror(
    mut rx: mpsc::Receiver<Copy>,
    shadow: http::Uri,
    replica: Option<http::Uri>,
    config: ProxyConfig,
    comparison: Arc<Comparison>,
    queued_bytes: Arc<AtomicUsize>,
) {
    // The shadow gets its own pool: it never shares a connection with the primary.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let permits = Arc::new(tokio::sync::Semaphore::new(
        config.shadow_concurrency.max(1),
    ));
    while let Some(copy) = rx.recv().await {
        queued_bytes.fetch_sub(copy.size(), Ordering::Relaxed);
        if !sampled(&config, copy.path.path(), &copy.body) {
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (client, shadow, replica, comparison) = (
            client.clone(),
            shadow.clone(),
            replica.clone(),
            comparison.clone(),
        );
        let timeout = config.shadow_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let to_shadow = send(&client, &shadow, &copy, Side::Shadow, timeout, &comparison);
            let to_replica = async {
                match &replica {
                    Some(replica) => {
                        send(&client, replica, &copy, Side::Replica, timeout, &comparison)
                            .await
                            .map(Some)
                    }
                    None => Some(None),
                }
            };
            // Every compared copy has all its answers: a copy the replica missed would
            // otherwise read as noise.
            let (Some(new), Some(again)) = tokio::join!(to_shadow, to_replica) else {
                return;
            };
            let primary = Reply {
                status: copy.primary_status,
                headers: &copy.primary_headers,
                body: &copy.primary_body,
            };
            comparison.record(
                copy.path.path(),
                &copy.body,
                primary,
                new.reply(),
                again.as_ref().map(Answered::reply),
            );
        });
    }
}

/// Whether a request is mirrored: a stable hash of its first event's sample key
/// (falling back to its event id) against the sample rate. Segment messages name the
/// keys `userId`, `anonymousId` and `messageId`.
fn sampled(config: &ProxyConfig, path: &str, body: &Bytes) -> bool {
    if config.sample_rate >= 1.0 {
        return true;
    }
    let key = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let (first, key, id) = match v.get("events") {
                Some(events) => (events.get(0)?, config.sample_key.as_str(), "event_id"),
                None => {
                    let first = if path == "/v1/batch" || path == "/v1/import" {
                        v.get("batch")?.get(0)?
                    } else {
                        &v
                    };
                    let key = match config.sample_key.as_str() {
                        "user_id" => "userId",
                        "device_id" => "anonymousId",
                        _ => "messageId",
                    };
                    (first, key, "messageId")
                }
            };
            first
                .get(key)
                .or_else(|| first.get(id))
                .and_then(|k| k.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    stable_fraction(&key) < config.sample_rate
}

/// A value in [0, 1) from a hash that is the same in every process and release, so the
/// same users are mirrored across restarts and replicas: FNV-1a, then the splitmix64
/// finalizer (FNV alone barely moves its high bits when only the last byte differs,
/// and ids like `user-1`, `user-2` do exactly that).
pub fn stable_fraction(key: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Headers passed on: all but hop-by-hop ones and `Host` (set from the upstream URL).
fn forwardable(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut out = headers.clone();
    for name in [
        http::header::HOST,
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::TE,
        http::header::UPGRADE,
        http::header::PROXY_AUTHORIZATION,
    ] {
        out.remove(name);
    }
    out.remove("keep-alive");
    out
}

fn respond(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Answer> {
    let mut response = Response::new(Either::Right(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::{ShadowPriority, lower_priority, stable_fraction};

    /// The scheduling policy (field 41 of /proc/thread-self/stat) and nice value (19).
    #[cfg(target_os = "linux")]
    fn own_scheduling() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the parenthesised command name, which may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (fields[38].parse().unwrap(), fields[16].parse().unwrap())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_shadow_thread_gives_way_to_the_primary_path() {
        let on_a_thread = |priority| {
            std::thread::spawn(move || {
                lower_priority(priority);
                own_scheduling()
            })
            .join()
            .unwrap()
        };
        const SCHED_OTHER: u32 = 0;
        const SCHED_IDLE: u32 = 5;
        assert_eq!(on_a_thread(ShadowPriority::Idle).0, SCHED_IDLE);
        assert_eq!(on_a_thread(ShadowPriority::Low), (SCHED_OTHER, 10));
        assert_eq!(on_a_thread(ShadowPriority::Normal).0, SCHED_OTHER);
    }

    #[test]
    fn similar_keys_spread_evenly_and_stably() {
        let below = (0..10_000)
            .filter(|i| stable_fraction(&format!("user-{i}")) < 0.5)
            .count();
        assert!((4_800..5_200).contains(&below), "{below}");
        // Fixed across processes and releases: sampled users stay sampled.
        assert_eq!(stable_fraction("user-1"), stable_fraction("user-1"));
        assert!(
            (0.76..0.77).contains(&stable_fraction("user-1")),
            "{}",
            stable_fraction("user-1")
        );
    }
}
