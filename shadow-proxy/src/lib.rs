//! `tollgate-shadow-proxy`: sits in front of two collector versions during a logging
//! migration. The client always gets the primary's answer, unchanged; a copy of each
//! request goes to the shadow through a bounded queue with its own timeout, so a slow or
//! dead shadow never slows the primary path (copies are dropped and counted instead).
//!
//! # Layout
//! - [`ProxyConfig`] and [`run`]: the listener, the primary path, the mirror queue;
//! - [`compare`]: per-event outcomes of both sides, counted per event name, and the
//!   bridge ratio new/old with a confidence interval;
//! - [`offline`]: the same questions over what two collectors logged.

pub mod compare;
pub mod file;
pub mod offline;
mod render;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compare::Comparison;

/// Marks the copies the shadow receives, so that it counts them apart.
pub const SHADOW_HEADER: &str = "x-tollgate-shadow";

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The collector whose answers clients receive (`http://host:port`).
    pub primary: String,
    /// The collector that receives copies; `None` mirrors nothing.
    pub shadow: Option<String>,
    /// Copies waiting for the shadow; when full, new copies are dropped.
    pub queue: usize,
    /// Copies in flight to the shadow at once.
    pub shadow_concurrency: usize,
    /// Longest the shadow may take for one copy.
    pub shadow_timeout: Duration,
    /// Largest body passed on (the collector's own limit is the real one).
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
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            primary: "http://127.0.0.1:8080".into(),
            shadow: None,
            queue: 10_000,
            shadow_concurrency: 64,
            shadow_timeout: Duration::from_secs(2),
            max_body: 4 << 20,
            tolerance: 0.05,
            sample_rate: 1.0,
            sample_key: "user_id".into(),
            tls: None,
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
    primary_body: Bytes,
}

struct Proxy {
    config: ProxyConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    primary: http::Uri,
    copies: Option<mpsc::Sender<Copy>>,
    comparison: Arc<Comparison>,
}

/// Serves until `shutdown` resolves.
///
/// # Errors
/// A primary or shadow URL that cannot be parsed.
pub async fn run(
    config: ProxyConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let comparison = Arc::new(Comparison::new(config.tolerance));
    let copies = match &config.shadow {
        Some(shadow) => {
            let shadow: http::Uri = shadow.parse()?;
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            // The shadow gets its own pool: it never shares a connection with the primary.
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let shadow_client = Client::builder(TokioExecutor::new()).build(connector);
            tokio::spawn(mirror(
                rx,
                shadow,
                shadow_client,
                config.clone(),
                comparison.clone(),
            ));
            Some(tx)
        }
        None => None,
    };
    let proxy = Arc::new(Proxy {
        primary: config.primary.parse()?,
        config,
        client,
        copies,
        comparison,
    });
    let token = CancellationToken::new();
    let mut options = tollgate_edge::ServeOptions::default();
    if let Some(files) = &proxy.config.tls {
        let store = tollgate_edge::CertStore::load(files.clone())?;
        store
            .clone()
            .watch(Duration::from_secs(10), token.child_token());
        options.tls = Some(store.server_config()?);
    }
    let server = tokio::spawn(tollgate_edge::serve(
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
    ));
    shutdown.await;
    token.cancel();
    let _ = server.await;
    Ok(())
}

impl Proxy {
    /// Whether this request is mirrored: a stable hash of the first event's sample key
    /// (falling back to its event id) against the sample rate.
    fn sampled(&self, body: &Bytes) -> bool {
        if self.config.sample_rate >= 1.0 {
            return true;
        }
        let key = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let first = v.get("events")?.get(0)?.clone();
                first
                    .get(&self.config.sample_key)
                    .or_else(|| first.get("event_id"))
                    .and_then(|k| k.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        stable_fraction(&key) < self.config.sample_rate
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/shadow/report" => {
                let body = serde_json::to_vec_pretty(&self.comparison.report())
                    .expect("a report serializes");
                return respond(StatusCode::OK, Bytes::from(body), "application/json");
            }
            "/shadow/report.html" => {
                let body = self.comparison.report().html();
                return respond(
                    StatusCode::OK,
                    Bytes::from(body),
                    "text/html; charset=utf-8",
                );
            }
            "/metrics" => {
                let body = self.comparison.report().prometheus();
                return respond(
                    StatusCode::OK,
                    Bytes::from(body),
                    "text/plain; version=0.0.4",
                );
            }
            _ => {}
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.config.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Bytes::from_static(br#"{"error":{"code":"body_too_large","message":"the proxy's body limit was exceeded"}}"#),
                    "application/json",
                );
            }
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let headers = forwardable(&parts.headers);
        let started = std::time::Instant::now();
        let answer = send(
            &self.client,
            &self.primary,
            &parts.method,
            &path,
            &headers,
            body.clone(),
            false,
        )
        .await;
        let (status, response_headers, response_body) = match answer {
            Ok(answer) => {
                self.comparison.latency(false, started.elapsed());
                answer
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
        if let Some(copies) = self.copies.as_ref().filter(|_| self.sampled(&body)) {
            let copy = Copy {
                method: parts.method.clone(),
                path,
                headers,
                body,
                primary_status: status,
                primary_body: response_body.clone(),
            };
            // Never wait: a full queue drops the copy.
            if copies.try_send(copy).is_err() {
                self.comparison.dropped("queue_full");
            }
        }
        let mut response = Response::new(Full::new(response_body));
        *response.status_mut() = status;
        *response.headers_mut() = response_headers;
        response
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &http::Uri,
    method: &http::Method,
    path: &http::uri::PathAndQuery,
    headers: &http::HeaderMap,
    body: Bytes,
    shadow: bool,
) -> anyhow::Result<(StatusCode, http::HeaderMap, Bytes)> {
    let uri = http::Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(base.authority().map(|a| a.as_str()).unwrap_or("127.0.0.1"))
        .path_and_query(path.clone())
        .build()?;
    let mut request = Request::builder().method(method.clone()).uri(uri);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if shadow {
        request = request.header(SHADOW_HEADER, "1");
    }
    let response = client.request(request.body(Full::new(body))?).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut headers = parts.headers;
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.remove(http::header::CONNECTION);
    Ok((parts.status, headers, body))
}

/// Drains the copy queue into the shadow, `shadow_concurrency` at a time.
async fn mirror(
    mut rx: mpsc::Receiver<Copy>,
    shadow: http::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    config: ProxyConfig,
    comparison: Arc<Comparison>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        config.shadow_concurrency.max(1),
    ));
    while let Some(copy) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (client, shadow, comparison) = (client.clone(), shadow.clone(), comparison.clone());
        let timeout = config.shadow_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let started = std::time::Instant::now();
            let sent = tokio::time::timeout(
                timeout,
                send(
                    &client,
                    &shadow,
                    &copy.method,
                    &copy.path,
                    &copy.headers,
                    copy.body.clone(),
                    true,
                ),
            )
            .await;
            match sent {
                Ok(Ok((status, _, body))) => {
                    comparison.latency(true, started.elapsed());
                    comparison.record(
                        &copy.body,
                        copy.primary_status,
                        &copy.primary_body,
                        status,
                        &body,
                    )
                }
                Ok(Err(_)) => comparison.dropped("shadow_error"),
                Err(_) => comparison.dropped("shadow_timeout"),
            }
        });
    }
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

fn respond(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::stable_fraction;

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
