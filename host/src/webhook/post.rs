//! One webhook request: resolve the endpoint's host, refuse addresses that are not public
//! (unless the operator allows them), connect to the address that was checked (so a second
//! lookup cannot swap it), speak TLS for `https`, POST, and read the status, all within the
//! configured timeouts.

use std::net::IpAddr;
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
        let allowed = |ip| self.allow_private || public(ip);
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
