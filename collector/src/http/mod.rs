//! The HTTP edge: listeners, the tower stack around the handlers, and routing.
//!
//! Enters: TCP connections, cleartext or TLS (HTTP/1.1 and HTTP/2 from one auto
//! builder; the accept loop is `tollgate_edge`'s). Leaves: for ingest
//! routes, the authenticated and decompressed body handed to [`crate::ingest`]; for the
//! probes and `/metrics`, their answers.
//!
//! The public stack, outermost first:
//! - tracing (a span per request);
//! - error mapping (turns shed or timed-out requests into JSON 503s);
//! - load shedding + a concurrency limit: past `max_concurrent_requests` the collector
//!   answers 503 at once instead of queueing without bound;
//! - a request timeout covering the body upload and the processing.

mod answer;
pub mod auth;
pub mod body;
mod candidates;
pub mod config;
mod replay;
mod route;
mod routes;
mod unwrap;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_http::trace::TraceLayer;

pub use routes::App;
pub use tollgate_edge::ServeOptions;

use crate::error::ApiError;

/// The address of the TCP peer that sent a request (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::IpAddr);

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Ingest routes and the probes.
    Public,
    /// `/metrics` and the probes; never exposed publicly.
    Admin,
}

/// Serves `listener` (cleartext, or TLS when `options.tls` is set) until `shutdown` is
/// cancelled, then lets open connections finish their requests for up to
/// `options.grace`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    kind: Listener,
    shutdown: CancellationToken,
    options: ServeOptions,
) {
    let handler = {
        let app = app.clone();
        tower::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req, kind).await) }
        })
    };
    let guarded = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(app.max_concurrent_requests)
        .timeout(app.request_timeout)
        .service(handler);
    let service = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .service(ErrorsAsResponses {
            inner: guarded,
            metrics: app.metrics.clone(),
        });
    tollgate_edge::serve(listener, options, shutdown, move |peer| {
        // The peer's address travels with each request: privacy believes a region
        // header only from trusted proxies.
        let service =
            tower::util::MapRequest::new(service.clone(), move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer.ip()));
                req
            });
        TowerToHyperService::new(service)
    })
    .await;
}

/// Turns the errors of the guard layers (shed, timed out) into JSON responses, so the
/// service hyper sees never fails. It drives the inner service with `oneshot`, which
/// polls readiness first: that is where the concurrency limit takes its permit and
/// where load shedding decides.
#[derive(Clone)]
struct ErrorsAsResponses<S> {
    inner: S,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl<S> tower::Service<Request<Incoming>> for ErrorsAsResponses<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            Ok(inner.oneshot(req).await.unwrap_or_else(|e| {
                let error = if e.is::<tower::load_shed::error::Overloaded>() {
                    ApiError::Overloaded
                } else if e.is::<tower::timeout::error::Elapsed>() {
                    ApiError::Timeout
                } else {
                    tracing::error!(error = %e, "unexpected service error");
                    ApiError::Internal
                };
                metrics.request_error(error.code());
                error.to_response()
            }))
        })
    }
}
