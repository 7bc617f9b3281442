//! The yardstick for the collector's HTTP throughput: a minimal hyper server that reads
//! each request body, parses it as JSON, and answers 200. No validation, no
//! idempotency, no disk. `scripts/bench-http.sh` loads both with the same requests.
//!
//! Usage: `parse-only-baseline [ADDR]` (default 127.0.0.1:8090).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The same allocator as the collector, so the comparison measures the code only.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("parse-only baseline on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let parsed = serde_json::from_slice::<serde_json::Value>(&body);
                    let answer: &'static [u8] = match parsed {
                        Ok(_) => b"{\"ok\":true}",
                        Err(_) => b"{\"ok\":false}",
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(answer))))
                });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
