//! The proxy itself: the client-facing listener and the primary path (bodies streamed
//! through a tee that keeps the copy), the copy queue, the shadow thread
//! at its own CPU priority, and the admin listener.

pub mod config;
mod mirror;
mod priority;
mod tee;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compare::{Comparison, Dropped, EXPLAIN_HEADER, OUTCOMES_HEADER, SOURCE_HEADER, Side};
use mirror::spawn_mirror;
use tee::{Copied, Tee};

pub use config::ProxyConfig;
pub use mirror::stable_fraction;
pub use priority::ShadowPriority;
pub use tollgate_event::wire::SHADOW_HEADER;

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the {0} URL: {1}")]
    Url(&'static str, #[source] http::uri::InvalidUri),
    #[error("TLS: {0}")]
    Tls(#[from] tollgate_edge::TlsError),
    #[error("starting the shadow thread: {0}")]
    ShadowThread(#[source] std::io::Error),
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
/// A primary, shadow or replica URL that cannot be parsed, TLS files that cannot be
/// used, or the shadow thread could not start.
pub async fn run(
    config: ProxyConfig,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
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
            let shadow: http::Uri = shadow.parse().map_err(|e| RunError::Url("shadow", e))?;
            let replica = config
                .replica
                .as_deref()
                .map(str::parse::<http::Uri>)
                .transpose()
                .map_err(|e| RunError::Url("replica", e))?;
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            spawn_mirror(
                rx,
                shadow,
                replica,
                config.clone(),
                comparison.clone(),
                queued_bytes.clone(),
            )
            .map_err(RunError::ShadowThread)?;
            Some(tx)
        }
        None => None,
    };
    let proxy = Arc::new(Proxy {
        primary: config
            .primary
            .parse()
            .map_err(|e| RunError::Url("primary", e))?,
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
