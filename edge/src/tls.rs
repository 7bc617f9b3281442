//! TLS for the public listeners.
//!
//! The certificate chain and key come from PEM files. A [`CertStore`] holds the current
//! pair and answers every handshake with it; [`CertStore::watch`] replaces it when the
//! process gets SIGHUP or when the files' modification times change, so a renewed
//! certificate (cert-manager, certbot) is served without a restart and without closing
//! a single open connection. A file that fails to load leaves the old pair in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Where a listener's certificate chain and private key live (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the key in {path} cannot be used: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS settings: {0}")]
    Settings(String),
}

/// The certificate every handshake gets, replaceable at run time.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertStore {
    /// Loads the pair once, with the aws-lc-rs provider.
    ///
    /// # Errors
    /// Unreadable files, no certificate, or a key that does not fit the provider.
    pub fn load(files: TlsFiles) -> Result<Arc<CertStore>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamps = stamps(&files);
        let key = load_pair(&files, &provider)?;
        Ok(Arc::new(CertStore {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new(stamps),
        }))
    }

    /// Server settings that answer every handshake from this store: TLS 1.3 and 1.2
    /// only, no client certificates, ALPN `h2` then `http/1.1`.
    ///
    /// # Errors
    /// The provider does not support the protocol versions (it does).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Settings(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads the files again and, when they are valid, serves them from the next
    /// handshake on.
    ///
    /// # Errors
    /// As [`load`](Self::load); the previous pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = stamps(&self.files);
        let key = load_pair(&self.files, &self.provider)?;
        *self.current.write().expect("cert lock") = Arc::new(key);
        *self.loaded.lock().expect("stamp lock") = stamps;
        Ok(())
    }

    /// [`reload`](Self::reload) when either file changed since the last load.
    ///
    /// # Errors
    /// As [`reload`](Self::reload).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if stamps(&self.files) == *self.loaded.lock().expect("stamp lock") {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Reloads on SIGHUP, and when the files change (checked every `interval`), until
    /// `shutdown` is cancelled.
    pub fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        self.watch_with(interval, shutdown, |_| {});
    }

    /// [`watch`](Self::watch), telling `observe` of every reload: `"reloaded"` or
    /// `"failed"` (the previous pair stays in use), e.g. to count them in a metric.
    pub fn watch_with(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
        observe: impl Fn(&'static str) + Send + 'static,
    ) {
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                let forced = tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => false,
                    Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => None } } => true,
                };
                let result = if forced {
                    self.reload().map(|()| true)
                } else {
                    self.reload_if_changed()
                };
                match result {
                    Ok(true) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                        observe("reloaded");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload failed; still serving the previous one");
                        observe("failed");
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").clone())
    }
}

fn stamps(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&files.cert), modified(&files.key))
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read_error = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read_error(&files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(&files.cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read_error(&files.key, &e))?;
    let key_error = |message: String| TlsError::Key {
        path: files.key.clone(),
        message,
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| key_error(format!("it does not match the certificate: {e}")))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    fn leaf(store: &CertStore) -> Vec<u8> {
        store.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn reload_swaps_the_pair_and_a_bad_file_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "one.test");
        let store = CertStore::load(files.clone()).unwrap();
        let first = leaf(&store);
        assert!(!store.reload_if_changed().unwrap(), "nothing changed yet");

        write_pair(dir.path(), "two.test");
        store.reload().unwrap();
        let second = leaf(&store);
        assert_ne!(first, second);

        std::fs::write(&files.key, "not a key").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(
            leaf(&store),
            second,
            "a failed reload keeps serving the last good pair"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "one.test");
        let other = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        let error = CertStore::load(files).unwrap_err();
        assert!(error.to_string().contains("does not match"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = CertStore::load(TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/cert.pem"),
            "{error}"
        );
    }
}
