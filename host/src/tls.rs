//! Native TLS (rustls, ring) on the listener: the certificate chain and key of
//! `server.tls`, checked every `reload_interval` and swapped when they change. A new
//! certificate serves new connections; open ones keep their sessions. A pair that does not
//! load is logged and counted, and the current one stays.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;
use crate::drain::Drain;

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// The listener's TLS: the acceptor, and the certificate it presents.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    cert: PathBuf,
    key: PathBuf,
    reload_interval: Duration,
    allow_plaintext: bool,
    /// Reloads that replaced the certificate, and changed files that did not load.
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// The certificate presented to new connections; swapped whole on a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

/// A connection once its first bytes are read: TLS, or plain where that is allowed.
pub(crate) enum Secured {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

impl Tls {
    /// Loads `config`'s files (relative to `base`).
    pub(crate) fn load(config: &TlsConfig, base: &Path) -> Result<Self, TlsError> {
        let (cert, key) = (base.join(&config.cert), base.join(&config.key));
        let provider = Arc::new(crate::outbound::crypto());
        let current = Arc::new(Current(RwLock::new(Arc::new(certified(&provider, &cert, &key)?))));
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            current,
            cert,
            key,
            reload_interval: config.reload_interval,
            allow_plaintext: config.allow_plaintext,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Completes the TLS handshake, or, where plain connections are allowed and the first
    /// byte is not a TLS handshake, hands the connection on as it is.
    pub(crate) async fn secure(&self, tcp: TcpStream) -> io::Result<Secured> {
        if self.allow_plaintext {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await? == 1 && first[0] != HANDSHAKE_RECORD {
                return Ok(Secured::Plain(tcp));
            }
        }
        Ok(Secured::Tls(Box::new(self.acceptor.accept(tcp).await?)))
    }

    /// Checks the files every `reload_interval` until the node drains, and swaps in a
    /// changed pair that loads.
    pub(crate) async fn watch(self: Arc<Self>, drain: Drain) {
        let mut last = self.digest();
        loop {
            tokio::select! {
                () = drain.started() => return,
                () = tokio::time::sleep(self.reload_interval) => {}
            }
            let now = self.digest();
            if now == last {
                continue;
            }
            last = now;
            let provider = crate::outbound::crypto();
            match certified(&provider, &self.cert, &self.key) {
                Ok(key) => {
                    *self.current.0.write().expect("certificate lock") = Arc::new(key);
                    self.reloads.fetch_add(1, Relaxed);
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    self.reload_failures.fetch_add(1, Relaxed);
                    tracing::error!("TLS certificate not reloaded, the current one stays: {e}");
                }
            }
        }
    }

    /// What the two files hold now (unreadable files count as empty).
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for path in [&self.cert, &self.key] {
            hash.update(std::fs::read(path).unwrap_or_default());
            hash.update([0]);
        }
        hash.finalize().into()
    }
}

/// The chain and key at `cert` and `key`, checked to belong together.
fn certified(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source });
    let invalid = |path: &Path, message: String| TlsError::Invalid { path: path.to_owned(), message };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(cert, "holds no certificate".into()));
    }
    let der =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| invalid(key, format!("not a PEM private key: {e}")))?;
    let signing = provider.key_provider.load_private_key(der).map_err(|e| invalid(key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| invalid(key, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}
