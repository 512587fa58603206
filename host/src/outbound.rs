//! An HTTP/1.1 client connection from the node to a host it calls (a webhook endpoint, an
//! identity provider's key set, or a running node for the command line): the TCP connection
//! to an address the caller allows, then plain or TLS with the caller's trust.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("TLS handshake with {host}: {source}")]
    Tls { host: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
}

/// Why no TCP connection could be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("{0} is not a public address (webhooks.allow_private is off)")]
    NotPublic(IpAddr),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: std::io::Error },
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// A connection to the first address of `host` that `allowed` accepts and that answers
/// within `timeout`; the address checked is the one connected to, so a second lookup
/// cannot swap it.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
    allowed: impl Fn(IpAddr) -> bool,
) -> Result<TcpStream, ConnectError> {
    let resolved = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Resolve { host: host.into(), source })?;
    let mut last = None;
    for addr in resolved {
        if !allowed(addr.ip()) {
            last = Some(ConnectError::NotPublic(addr.ip()));
            continue;
        }
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(source)) => last = Some(ConnectError::Connect { addr, source }),
            Err(_) => last = Some(ConnectError::Timeout(timeout)),
        }
    }
    let none = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    Err(last.unwrap_or(ConnectError::Resolve { host: host.into(), source: none }))
}

/// Why no HTTP connection to a URL's host could be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// An HTTP/1.1 connection to the host of `url`: TCP to an address `allowed` accepts within
/// `connect_timeout`, then TLS with `tls` for `https`. Send it a [`request`] for `url`.
pub(crate) async fn dial(
    url: &Uri,
    connect_timeout: Duration,
    allowed: impl Fn(IpAddr) -> bool,
    tls: &TlsConnector,
) -> Result<SendRequest<Full<Bytes>>, DialError> {
    let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
    let secure = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = connect(host, port, connect_timeout, allowed).await?;
    Ok(open(tcp, secure.then_some(tls), host).await?)
}

/// A request for `url` on a connection [`dial`] made: its path, and its `Host`.
pub(crate) fn request(method: Method, url: &Uri) -> hyper::http::request::Builder {
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or("", |a| a.as_str());
    Request::builder().method(method).uri(path).header("host", authority)
}

/// TLS for calls to hosts on the internet: the system's trusted roots (which honour
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub(crate) fn system_tls(crypto: rustls::crypto::CryptoProvider) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(crypto))
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(tls))
}

/// A connection to the host on `tcp`, over TLS to `host` when `tls` is given; it closes
/// once the sender is dropped.
pub(crate) async fn open(
    tcp: TcpStream,
    tls: Option<&TlsConnector>,
    host: &str,
) -> Result<SendRequest<Full<Bytes>>, OpenError> {
    let tls_error = |source| OpenError::Tls { host: host.into(), source };
    let io: Box<dyn Io> = match tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| tls_error(std::io::Error::other(e)))?;
            Box::new(connector.connect(name, tcp).await.map_err(tls_error)?)
        }
        None => Box::new(tcp),
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
