//! The network edge that Tollgate's servers share: the accept loop (HTTP/1.1 and
//! HTTP/2, cleartext or TLS, graceful drain) and TLS with certificates reloaded from
//! disk without dropping connections.
//!
//! - [`serve()`]: accepts connections until cancelled, hands each to hyper, then drains;
//! - [`tls`]: rustls server settings (aws-lc-rs, TLS 1.2 and 1.3, ALPN `h2` and
//!   `http/1.1`), PEM loading, and reload on SIGHUP or when the files change.

pub mod serve;
pub mod tls;

pub use serve::{ConnectionEvent, ConnectionObserver, ServeOptions, serve};
pub use tls::{CertStore, TlsError, TlsFiles};
