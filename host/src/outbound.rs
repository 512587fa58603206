//! An HTTP/1.1 client connection from the node to a host it calls (a webhook endpoint, or a
//! running node for the command line), over a TCP stream already connected: plain, or TLS
//! with the caller's trust.

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
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
