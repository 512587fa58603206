//! An HTTP client connection from the node to a host it calls (a webhook endpoint, an
//! identity provider's key set, a push service, or a running node for the command line):
//! the TCP connection to an address the caller allows, then plain or TLS with the caller's
//! trust, then HTTP/1.1, or HTTP/2 for services that speak only it (APNs).

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
            Ok(Ok(tcp)) => {
                // Requests and answers are small and awaited: Nagle's algorithm would hold
                // each HTTP/2 frame for the peer's delayed ACK.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
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

/// Why a [`call`] got no whole answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
}

/// Sends `req` (made with [`request`] for `url`) over a new connection to `url`'s host
/// ([`dial`]); the answer's status and its body of at most `limit` bytes.
pub(crate) async fn call(
    url: &Uri,
    connect_timeout: Duration,
    allowed: impl Fn(IpAddr) -> bool,
    tls: &TlsConnector,
    req: Request<Full<Bytes>>,
    limit: usize,
) -> Result<(hyper::StatusCode, Bytes), CallError> {
    use http_body_util::{BodyExt, Limited};
    let mut sender = dial(url, connect_timeout, allowed, tls).await?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let body =
        Limited::new(response.into_body(), limit).collect().await.map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => CallError::Http(*e),
            Err(_) => CallError::TooLarge(limit),
        })?;
    Ok((status, body.to_bytes()))
}

/// rustls on *ring*, for every TLS the node speaks (its listeners and its outbound calls):
/// no C toolchain in the build, at the price of no post-quantum key exchange (which rustls
/// offers only with aws-lc-rs, hence the deprecation).
#[allow(deprecated)]
pub(crate) fn crypto() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// TLS for calls to hosts on the internet: the system's trusted roots (which honour
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub(crate) fn system_tls(crypto: rustls::crypto::CryptoProvider) -> TlsConnector {
    TlsConnector::from(Arc::new(trusting_the_system(crypto)))
}

fn trusting_the_system(crypto: rustls::crypto::CryptoProvider) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    rustls::ClientConfig::builder_with_provider(Arc::new(crypto))
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A connection to the host on `tcp`, over TLS to `host` when `tls` is given; it closes
/// once the sender is dropped.
pub(crate) async fn open(
    tcp: TcpStream,
    tls: Option<&TlsConnector>,
    host: &str,
) -> Result<SendRequest<Full<Bytes>>, OpenError> {
    let io = secure(tcp, tls, host).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `tcp`, over TLS to `host` when `tls` is given.
async fn secure(tcp: TcpStream, tls: Option<&TlsConnector>, host: &str) -> Result<Box<dyn Io>, OpenError> {
    let tls_error = |source| OpenError::Tls { host: host.into(), source };
    Ok(match tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| tls_error(std::io::Error::other(e)))?;
            Box::new(connector.connect(name, tcp).await.map_err(tls_error)?)
        }
        None => Box::new(tcp),
    })
}

/// An HTTP/2 connection to the host of `url`, as [`dial`] makes an HTTP/1.1 one: for
/// `https`, TLS with `tls` (which must offer `h2`, as [`system_tls_h2`] does); for `http`,
/// HTTP/2 with prior knowledge. Its sender is shared by concurrent requests.
pub(crate) async fn dial_h2(
    url: &Uri,
    connect_timeout: Duration,
    allowed: impl Fn(IpAddr) -> bool,
    tls: &TlsConnector,
) -> Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>, DialError> {
    let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
    let secure_scheme = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if secure_scheme { 443 } else { 80 });
    let tcp = connect(host, port, connect_timeout, allowed).await?;
    let io = secure(tcp, secure_scheme.then_some(tls), host).await?;
    let executor = hyper_util::rt::TokioExecutor::new();
    let (sender, conn) = hyper::client::conn::http2::handshake(executor, hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(OpenError::from)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// [`system_tls`] offering HTTP/2 only (ALPN `h2`).
pub(crate) fn system_tls_h2(crypto: rustls::crypto::CryptoProvider) -> TlsConnector {
    let mut tls = trusting_the_system(crypto);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(tls))
}

/// A connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Whether `ip` is on the public internet: not loopback, private, link-local, shared
/// (carrier-grade NAT), documentation, benchmarking, multicast, broadcast or unspecified.
pub(crate) fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || first == 0x2001 && v6.segments()[1] == 0x0db8)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!public(private.parse().unwrap()), "{private}");
        }
        for open in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(public(open.parse().unwrap()), "{open}");
        }
    }
}
