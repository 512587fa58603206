//! The Apple Push Notification service: HTTP/2 only, one connection per service URL kept
//! open and shared by every push to it (as Apple asks), each request signed with a provider
//! token (an ES256 JWT of the tenant's `.p8` key) that is reused for 50 minutes: Apple
//! refuses tokens older than an hour and new ones more often than every 20 minutes. A 403
//! naming an expired or invalid provider token takes a new one and tries once more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, StatusCode, Uri};
use serde::Deserialize;

use super::job::{Job, Kind};
use crate::config::ApnsCredentials;
use crate::outbound::DialError;

/// How long a provider token is used.
const TOKEN_LIFE_MS: u64 = 50 * 60 * 1000;
/// APNs takes payloads of at most 4 KiB.
pub(crate) const MAX_PAYLOAD: usize = 4096;
/// Largest answer read.
const MAX_ANSWER: usize = 16 * 1024;

/// Why a notification was not handed to APNs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApnsError {
    #[error("the provider key cannot be used: {0}")]
    Key(String),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What APNs said of one notification.
pub(crate) enum Answer {
    Sent,
    /// 410: the device token is no longer active for the topic.
    Gone,
    /// Another status, with APNs's reason.
    Refused(u16, String),
}

/// A service URL's connection, once made.
type Slot = tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>;

/// Sends notifications to APNs for every tenant of the node.
pub(crate) struct Apns {
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
    /// One HTTP/2 connection per service URL, replaced when it closes; its slot is held
    /// while it is being made, so pushes at once wait for one connection, not make many.
    connections: Mutex<HashMap<String, Arc<Slot>>>,
    /// Provider tokens by team and key, with when each was made (Unix ms).
    tokens: Mutex<HashMap<String, (String, u64)>>,
}

impl Apns {
    pub(crate) fn new(timeout: Duration) -> Self {
        let tls = crate::outbound::system_tls_h2(crate::outbound::crypto());
        Self { timeout, tls, connections: Mutex::default(), tokens: Mutex::default() }
    }

    /// Sends `job`'s notification to the device with `token`, kept by APNs for `ttl`.
    pub(crate) async fn send(
        &self,
        credentials: &ApnsCredentials,
        job: &Job,
        token: &str,
        ttl: Duration,
    ) -> Result<Answer, ApnsError> {
        tokio::time::timeout(self.timeout, self.exchange(credentials, job, token, ttl))
            .await
            .unwrap_or(Err(ApnsError::Timeout(self.timeout)))
    }

    async fn exchange(
        &self,
        credentials: &ApnsCredentials,
        job: &Job,
        token: &str,
        ttl: Duration,
    ) -> Result<Answer, ApnsError> {
        let base = credentials.base_url.trim_end_matches('/');
        let url: Uri = format!("{base}/3/device/{token}").parse().map_err(|_| ApnsError::Key("base_url".into()))?;
        let body = Bytes::from(payload(job));
        let expiration = crate::clock::now_millis() / 1000 + ttl.as_secs();
        for attempt in 0..2 {
            let bearer = self.provider_token(credentials, attempt > 0)?;
            // HTTP/2 takes the whole URL (`:scheme`, `:authority`, `:path`).
            let mut req = hyper::Request::builder()
                .method(Method::POST)
                .uri(url.clone())
                .header("authorization", format!("bearer {bearer}"))
                .header("apns-topic", &credentials.topic)
                .header("apns-expiration", expiration.to_string());
            req = match job.kind {
                Kind::Notify => req.header("apns-push-type", "alert").header("apns-priority", priority(job)),
                Kind::Withdraw => req.header("apns-push-type", "background").header("apns-priority", "5"),
            };
            if let Some(key) = &job.alert.collapse_key {
                req = req.header("apns-collapse-id", key);
            }
            let req = req.body(Full::new(body.clone())).expect("a request of checked parts");
            let (status, reason) = self.request(&url, base, req).await?;
            match (status, reason.as_str()) {
                (StatusCode::OK, _) => return Ok(Answer::Sent),
                (StatusCode::GONE, _) => return Ok(Answer::Gone),
                (StatusCode::FORBIDDEN, "ExpiredProviderToken" | "InvalidProviderToken") if attempt == 0 => continue,
                (other, _) => return Ok(Answer::Refused(other.as_u16(), reason)),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Sends `req` on the connection to `base` (made, or made again when closed); the status
    /// and APNs's `reason`.
    async fn request(
        &self,
        url: &Uri,
        base: &str,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(StatusCode, String), ApnsError> {
        let slot = self.connections.lock().expect("apns connections lock").entry(base.to_owned()).or_default().clone();
        let mut sender = {
            let mut kept = slot.lock().await;
            match kept.as_ref().filter(|s| !s.is_closed()) {
                Some(sender) => sender.clone(),
                None => {
                    let sender = crate::outbound::dial_h2(url, self.timeout, |_| true, &self.tls).await?;
                    *kept = Some(sender.clone());
                    sender
                }
            }
        };
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map(|b| b.to_bytes());
        #[derive(Deserialize)]
        struct Reason {
            reason: String,
        }
        let reason = body.ok().and_then(|b| serde_json::from_slice::<Reason>(&b).ok()).map(|r| r.reason);
        Ok((status, reason.unwrap_or_default()))
    }

    /// The team's provider token for the key: the one made within `TOKEN_LIFE_MS`, unless
    /// `fresh`.
    fn provider_token(&self, c: &ApnsCredentials, fresh: bool) -> Result<String, ApnsError> {
        let now = crate::clock::now_millis();
        let id = format!("{}\n{}\n{}", c.team_id, c.key_id, c.private_key);
        let mut tokens = self.tokens.lock().expect("apns tokens lock");
        if let Some((token, _)) = tokens.get(&id).filter(|(_, made)| !fresh && now < made + TOKEN_LIFE_MS) {
            return Ok(token.clone());
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(c.key_id.clone());
        let claims = serde_json::json!({"iss": c.team_id, "iat": now / 1000});
        let key = jsonwebtoken::EncodingKey::from_ec_pem(c.private_key.as_bytes())
            .map_err(|e| ApnsError::Key(e.to_string()))?;
        let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| ApnsError::Key(e.to_string()))?;
        tokens.insert(id, (token.clone(), now));
        Ok(token)
    }
}

/// `10` (at once) for `urgency: high` or none, `5` (when the device's power allows) below.
fn priority(job: &Job) -> &'static str {
    use crate::alert::Urgency;
    match job.alert.urgency {
        Some(Urgency::VeryLow | Urgency::Low | Urgency::Normal) => "5",
        Some(Urgency::High) | None => "10",
    }
}

/// The notification's JSON: `aps` with the alert, the event beside it (without its data
/// when that does not fit in APNs's 4 KiB); a withdrawal is a background notification.
fn payload(job: &Job) -> Vec<u8> {
    let a = &job.alert;
    if job.kind == Kind::Withdraw {
        let json = serde_json::json!({"aps": {"content-available": 1}, "type": "withdraw", "id": job.id, "tag": a.collapse_key});
        return serde_json::to_vec(&json).expect("JSON values serialize");
    }
    let make = |data: Option<&serde_json::value::RawValue>| {
        let json = serde_json::json!({
            "aps": {"alert": {"title": a.title.as_deref().unwrap_or(&job.event), "body": a.body}, "sound": "default"},
            "type": "notification", "id": job.id, "event": job.event, "ts": job.ts, "url": a.url, "tag": a.collapse_key,
            "data": data, "truncated": data.is_none(),
        });
        serde_json::to_vec(&json).expect("JSON values serialize")
    };
    let full = make(Some(&job.data));
    if full.len() <= MAX_PAYLOAD { full } else { make(None) }
}
