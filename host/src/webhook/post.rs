//! One webhook request: resolve the endpoint's host, refuse addresses that are not public
//! (unless the operator allows them), connect to the address that was checked (so a second
//! lookup cannot swap it), speak TLS for `https`, POST, and read the status, all within the
//! configured timeouts.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Uri};

use crate::config::WebhooksConfig;
use crate::outbound::{ConnectError, DialError};

/// Why a request did not get an answer, or got a failing one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(u16),
}

impl PostError {
    /// Trying again cannot help: the endpoint's address is refused.
    pub(crate) fn permanent(&self) -> bool {
        matches!(self, PostError::Dial(DialError::Connect(ConnectError::NotPublic(_))))
    }
}

/// Sends webhook requests for every endpoint of the node.
pub(crate) struct Poster {
    allow_private: bool,
    connect_timeout: Duration,
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl Poster {
    pub(crate) fn new(config: &WebhooksConfig, crypto: rustls::crypto::CryptoProvider) -> Self {
        Self {
            allow_private: config.allow_private,
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            tls: crate::outbound::system_tls(crypto),
        }
    }

    /// POSTs `body` with `headers` to `url`; Ok once the endpoint answered 2xx.
    pub(crate) async fn post(&self, url: &Uri, headers: &[(&str, String)], body: Bytes) -> Result<(), PostError> {
        tokio::time::timeout(self.timeout, self.exchange(url, headers, body))
            .await
            .unwrap_or(Err(PostError::Timeout(self.timeout)))
    }

    async fn exchange(&self, url: &Uri, headers: &[(&str, String)], body: Bytes) -> Result<(), PostError> {
        let allowed = |ip| self.allow_private || crate::outbound::public(ip);
        let mut sender = crate::outbound::dial(url, self.connect_timeout, allowed, &self.tls).await?;
        let mut req = crate::outbound::request(Method::POST, url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("notify-webhooks/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(body)).expect("a request of checked parts");
        // Only the status counts: the body is never read (an endpoint could send any amount),
        // and the connection closes with the response.
        let status = sender.send_request(req).await?.status();
        if status.is_success() { Ok(()) } else { Err(PostError::Status(status.as_u16())) }
    }
}
