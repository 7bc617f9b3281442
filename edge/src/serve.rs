//! The accept loop: one task per connection, HTTP/1.1 or HTTP/2 (ALPN over TLS, prior
//! knowledge in cleartext), and a graceful drain on shutdown.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How a listener serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// Speak TLS with these settings; `None`: cleartext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long open connections may take to finish their requests after shutdown.
    pub grace: Duration,
    /// Longest a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            grace: Duration::from_secs(25),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled, serving each with
/// the service `make_service(peer)` builds, then lets open connections finish their
/// requests for up to `options.grace`.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: CancellationToken,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(peer);
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        match &acceptor {
            None => {
                tokio::spawn(connection(stream, service, builder, watcher));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let timeout = options.handshake_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => connection(tls, service, builder, watcher).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?options.grace,
            "connections still open after the shutdown grace period"
        );
    }
}

async fn connection<I, S, B>(
    io: I,
    service: S,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
