//! The accept loop: one task per connection, HTTP/1.1 or HTTP/2 (ALPN over TLS, prior
//! knowledge in cleartext), and a graceful drain on shutdown.
//!
//! A public server must not let a client hold its resources for free, so every
//! connection is bounded:
//! - at most [`ServeOptions::max_connections`] are open; past that the loop stops
//!   accepting (clients wait in the kernel's backlog) until one closes;
//! - a client has [`ServeOptions::header_read_timeout`] to send a request's headers
//!   (slowloris: dribbling header bytes keeps nothing open longer than that);
//! - a connection on which no byte moves in either direction for
//!   [`ServeOptions::idle_timeout`] while it waits to read or write is closed (an idle
//!   keep-alive connection, or a client that stopped reading its answers).

use std::error::Error as StdError;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What happened to a connection, for the server's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Accepted (and, over TLS, handshaken).
    Opened,
    /// Closed, for any reason (follows every `Opened`).
    Closed,
    /// Closed because the request headers took longer than `header_read_timeout`.
    HeaderTimeout,
    /// Closed because nothing moved for `idle_timeout`.
    IdleTimeout,
    /// The TLS handshake failed or took longer than `handshake_timeout`.
    HandshakeFailed,
}

impl ConnectionEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionEvent::Opened => "opened",
            ConnectionEvent::Closed => "closed",
            ConnectionEvent::HeaderTimeout => "header_timeout",
            ConnectionEvent::IdleTimeout => "idle_timeout",
            ConnectionEvent::HandshakeFailed => "handshake_failed",
        }
    }
}

/// Called for each [`ConnectionEvent`] (from the connection's task; keep it cheap).
pub type ConnectionObserver = Arc<dyn Fn(ConnectionEvent) + Send + Sync>;

/// How a listener serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// Speak TLS with these settings; `None`: cleartext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long open connections may take to finish their requests after shutdown.
    pub grace: Duration,
    /// Longest a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest a client may take to send a request's headers (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved in either direction for this long, while it
    /// waits to read or write, is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Told of each connection's events.
    pub observer: Option<ConnectionObserver>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            grace: Duration::from_secs(25),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            observer: None,
        }
    }
}

impl ServeOptions {
    fn observe(&self, event: ConnectionEvent) {
        if let Some(observer) = &self.observer {
            observer(event);
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    loop {
        // A slot first: at the limit, connections wait in the backlog, unaccepted.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
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
        let (builder, watcher, options) = (builder.clone(), graceful.watcher(), options.clone());
        let stream = IdleTimeout::new(stream, options.idle_timeout);
        match &acceptor {
            None => {
                tokio::spawn(async move {
                    connection(stream, service, builder, watcher, &options).await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(options.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => connection(tls, service, builder, watcher, &options).await,
                        Ok(Err(e)) => {
                            options.observe(ConnectionEvent::HandshakeFailed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            options.observe(ConnectionEvent::HandshakeFailed);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                    drop(slot);
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
    options: &ServeOptions,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    options.observe(ConnectionEvent::Opened);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        if let Some(event) = timeout_of(&*e) {
            options.observe(event);
        }
        tracing::debug!(error = %e, "connection ended with an error");
    }
    options.observe(ConnectionEvent::Closed);
}

/// Which of our timeouts ended a connection, if one did.
fn timeout_of(error: &(dyn StdError + 'static)) -> Option<ConnectionEvent> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return Some(ConnectionEvent::IdleTimeout);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_timeout()
        {
            return Some(ConnectionEvent::HeaderTimeout);
        }
        next = e.source();
    }
    None
}

/// A stream that fails with `TimedOut` when it waits to read or write and no byte has
/// moved in either direction for `timeout`.
///
/// Progress only records the time (no timer work per read or write); the timer is
/// polled only while the stream waits, and pushed back lazily when it fires early.
struct IdleTimeout<I> {
    io: I,
    timeout: Duration,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<I> IdleTimeout<I> {
    fn new(io: I, timeout: Duration) -> Self {
        let now = Instant::now();
        IdleTimeout {
            io,
            timeout,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// Called when the inner stream is not ready: `Err` once the idle time is up.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        loop {
            let deadline = self.last_progress + self.timeout;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(()) if Instant::now() >= self.last_progress + self.timeout => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no bytes moved on the connection within the idle timeout",
                    ));
                }
                Poll::Ready(()) => {}
            }
        }
    }
}

impl<I> IdleTimeout<I> {
    /// What every poll of the inner stream goes through: progress moves the deadline,
    /// waiting checks it.
    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(Ok(value)) => {
                if progressed(&value) {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(Ok(value))
            }
            Poll::Pending => match self.poll_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            failed => failed,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleTimeout<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let filled = buf.filled().len();
        self.after(cx, polled, |()| filled > before)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.after(cx, polled, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after(cx, polled, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.after(cx, polled, |()| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
