//! Web Push (RFC 8030): one message encrypted for one browser subscription (`ece`) and
//! POSTed to its push service with the tenant's VAPID identification (`vapid`), with the
//! `TTL`, `Urgency` and `Topic` headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Uri};

use super::ece::{self, EncryptError};
use super::vapid::{Vapid, VapidError};
use crate::outbound::DialError;

/// Why a push message was not handed to the push service.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("{0} is not base64url")]
    Base64(&'static str),
    #[error("the endpoint is not an http(s) URL")]
    Endpoint,
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    #[error(transparent)]
    Vapid(#[from] VapidError),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One push message for one Web Push subscription.
pub(crate) struct Message<'a> {
    pub endpoint: &'a str,
    /// The subscription's `keys.p256dh` and `keys.auth`, base64url.
    pub p256dh: &'a str,
    pub auth: &'a str,
    pub payload: &'a [u8],
    /// Seconds the push service keeps the message for an offline browser.
    pub ttl: u32,
    pub urgency: Option<&'a str>,
    /// Replaces a message of the same topic still waiting at the push service.
    pub topic: Option<&'a str>,
}

/// A signed VAPID token is used until this long before it expires.
const RESIGN_MARGIN_SECS: u64 = 3600;
/// Signed tokens kept per key; more push service origins than this start over.
const MAX_SIGNED: usize = 64;
/// VAPID keys kept; more (keys rotated many times over) start over.
const MAX_SIGNERS: usize = 1024;

/// Sends Web Push messages: where it may connect, with which trust, for how long.
pub(crate) struct WebPush {
    /// Push services at loopback and private addresses may be reached.
    pub allow_private: bool,
    pub timeout: Duration,
    pub tls: tokio_rustls::TlsConnector,
    /// VAPID keys by their private key's text, each read once; at most [`MAX_SIGNERS`].
    /// Locked only to look up or insert.
    signers: Mutex<HashMap<String, Arc<Signer>>>,
}

/// A tenant's VAPID key and the tokens it signed: one per push service origin and contact,
/// with when it stops being used (Unix seconds).
struct Signer {
    vapid: Vapid,
    /// Locked only to look up or insert; at most [`MAX_SIGNED`] entries.
    signed: Mutex<HashMap<(String, String), (String, u64)>>,
}

impl WebPush {
    /// A sender trusting the system's roots.
    pub(crate) fn new(allow_private: bool, timeout: Duration) -> Self {
        let tls = crate::outbound::system_tls(crate::outbound::crypto());
        Self { allow_private, timeout, tls, signers: Mutex::default() }
    }

    /// Encrypts `message` and POSTs it to its endpoint with the identification of the
    /// VAPID key `private_key` naming `contact`; the push service's status (201 accepted,
    /// 404/410 the subscription is gone).
    pub(crate) async fn send(&self, private_key: &str, contact: &str, message: &Message<'_>) -> Result<u16, SendError> {
        tokio::time::timeout(self.timeout, self.exchange(private_key, contact, message))
            .await
            .unwrap_or(Err(SendError::Timeout(self.timeout)))
    }

    /// The `Authorization` header for a push service at `origin`: a token the key signed
    /// earlier while it has an hour left, or a new one.
    fn authorization(&self, private_key: &str, origin: &str, contact: &str) -> Result<String, VapidError> {
        let found = self.signers.lock().expect("vapid signers lock").get(private_key).cloned();
        let signer = match found {
            Some(signer) => signer,
            None => {
                let signer = Arc::new(Signer { vapid: Vapid::from_private(private_key)?, signed: Mutex::default() });
                let mut signers = self.signers.lock().expect("vapid signers lock");
                if signers.len() >= MAX_SIGNERS {
                    signers.clear();
                }
                signers.insert(private_key.to_owned(), signer.clone());
                signer
            }
        };
        let now = crate::clock::now_millis() / 1000;
        let key = (origin.to_owned(), contact.to_owned());
        if let Some((header, until)) = signer.signed.lock().expect("vapid tokens lock").get(&key)
            && *until > now
        {
            return Ok(header.clone());
        }
        let header = signer.vapid.authorization(origin, contact, now)?;
        let mut signed = signer.signed.lock().expect("vapid tokens lock");
        if signed.len() >= MAX_SIGNED {
            signed.clear();
        }
        signed.insert(key, (header.clone(), now + super::vapid::TOKEN_LIFETIME_SECS - RESIGN_MARGIN_SECS));
        Ok(header)
    }

    async fn exchange(&self, private_key: &str, contact: &str, m: &Message<'_>) -> Result<u16, SendError> {
        let decode =
            |text: &str, what| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| SendError::Base64(what));
        let body = ece::encrypt(m.payload, &decode(m.p256dh, "p256dh")?, &decode(m.auth, "auth")?)?;
        let url: Uri = m.endpoint.parse().map_err(|_| SendError::Endpoint)?;
        let (Some(scheme @ ("http" | "https")), Some(authority)) = (url.scheme_str(), url.authority()) else {
            return Err(SendError::Endpoint);
        };
        let authorization = self.authorization(private_key, &format!("{scheme}://{authority}"), contact)?;
        let allowed = |ip| self.allow_private || crate::outbound::public(ip);
        let mut sender = crate::outbound::dial(&url, self.timeout, allowed, &self.tls).await?;
        let mut req = crate::outbound::request(Method::POST, &url)
            .header("content-type", "application/octet-stream")
            .header("content-encoding", "aes128gcm")
            .header("ttl", m.ttl.to_string())
            .header("authorization", authorization);
        if let Some(urgency) = m.urgency {
            req = req.header("urgency", urgency);
        }
        if let Some(topic) = m.topic {
            req = req.header("topic", topic);
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|_| SendError::Endpoint)?;
        Ok(sender.send_request(req).await?.status().as_u16())
    }
}
