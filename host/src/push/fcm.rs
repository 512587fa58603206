//! Firebase Cloud Messaging, HTTP v1: an OAuth access token obtained with the tenant's
//! service account (an RS256 JWT exchanged at its `token_uri`), kept until shortly before it
//! expires and shared by the node's pushes for that account, then one `messages:send` per
//! device token. A 401 takes a fresh token and tries once more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, StatusCode, Uri};
use serde::Deserialize;

use super::job::{Job, Kind};
use crate::config::{FcmCredentials, ServiceAccount};
use crate::outbound::CallError;

/// The OAuth scope of `messages:send`.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Largest answer read from FCM or the token endpoint.
const MAX_ANSWER: usize = 64 * 1024;
/// Service accounts kept; more (key files rotated many times over) start over.
const MAX_ACCOUNTS: usize = 1024;
/// A token is replaced this long before it expires.
const MARGIN: Duration = Duration::from_secs(60);

/// Why a message was not handed to FCM.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FcmError {
    #[error("the service account cannot be used: {0}")]
    Account(String),
    #[error("the token endpoint answered {0}")]
    Token(u16),
    #[error("the token endpoint's answer is not a token: {0}")]
    TokenAnswer(#[from] serde_json::Error),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What FCM said of one message.
pub(crate) enum Answer {
    Sent,
    /// `UNREGISTERED`: the app was uninstalled or the token expired.
    Gone,
    /// Another status: 429 and 5xx mean later, other 4xx mean never.
    Refused(u16),
}

/// An access token and when it stops being used (Unix ms).
#[derive(Clone)]
struct Token {
    value: String,
    until: u64,
}

/// Sends FCM messages for every tenant of the node.
pub(crate) struct Fcm {
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
    /// Service accounts by their key file's text: each read once, with its access token
    /// (one fetch at a time per account, whose token every push then shares); at most
    /// [`MAX_ACCOUNTS`]. Locked only to look up or insert.
    accounts: Mutex<HashMap<String, Arc<Account>>>,
}

/// A service account as read from its key file, and its access token.
struct Account {
    key: ServiceAccount,
    /// Held while a token is fetched, so concurrent pushes wait for that one.
    token: tokio::sync::Mutex<Option<Token>>,
}

impl Fcm {
    pub(crate) fn new(timeout: Duration, tls: tokio_rustls::TlsConnector) -> Self {
        Self { timeout, tls, accounts: Mutex::default() }
    }

    /// Sends `job`'s message to the app with registration `token`, kept by FCM for `ttl`
    /// while the device is offline.
    pub(crate) async fn send(
        &self,
        credentials: &FcmCredentials,
        job: &Job,
        token: &str,
        ttl: Duration,
    ) -> Result<Answer, FcmError> {
        let body = Bytes::from(serde_json::to_vec(&message(job, token, ttl)).expect("JSON values serialize"));
        tokio::time::timeout(self.timeout, self.exchange(credentials, body))
            .await
            .unwrap_or(Err(FcmError::Timeout(self.timeout)))
    }

    /// The account of `key_file`, read the first time it is used.
    fn account(&self, key_file: &str) -> Result<Arc<Account>, FcmError> {
        if let Some(account) = self.accounts.lock().expect("fcm accounts lock").get(key_file) {
            return Ok(account.clone());
        }
        let key = ServiceAccount::parse(key_file).map_err(FcmError::Account)?;
        let account = Arc::new(Account { key, token: tokio::sync::Mutex::default() });
        let mut accounts = self.accounts.lock().expect("fcm accounts lock");
        if accounts.len() >= MAX_ACCOUNTS {
            accounts.clear();
        }
        accounts.insert(key_file.to_owned(), account.clone());
        Ok(account)
    }

    async fn exchange(&self, credentials: &FcmCredentials, body: Bytes) -> Result<Answer, FcmError> {
        let account = self.account(&credentials.service_account)?;
        let url: Uri = format!(
            "{}/v1/projects/{}/messages:send",
            credentials.base_url.trim_end_matches('/'),
            account.key.project_id
        )
        .parse()
        .map_err(|_| FcmError::Account("base_url is not a URL".into()))?;
        for attempt in 0..2 {
            let access = self.access_token(&account, attempt > 0).await?;
            let req = crate::outbound::request(Method::POST, &url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {access}"))
                .body(Full::new(body.clone()))
                .expect("a request of checked parts");
            let (status, answer) =
                crate::outbound::call(&url, self.timeout, |_| true, &self.tls, req, MAX_ANSWER).await?;
            match status {
                StatusCode::OK => return Ok(Answer::Sent),
                StatusCode::UNAUTHORIZED if attempt == 0 => continue,
                _ if unregistered(&answer) => return Ok(Answer::Gone),
                other => return Ok(Answer::Refused(other.as_u16())),
            }
        }
        Ok(Answer::Refused(StatusCode::UNAUTHORIZED.as_u16()))
    }

    /// The account's access token: the one kept, unless `fresh` or it is about to expire.
    async fn access_token(&self, account: &Account, fresh: bool) -> Result<String, FcmError> {
        let mut kept = account.token.lock().await;
        let now = crate::clock::now_millis();
        if let Some(token) = kept.as_ref().filter(|t| !fresh && t.until > now) {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token(&account.key, now).await?;
        *kept = Some(token.clone());
        Ok(token.value)
    }

    /// Exchanges a JWT signed with the account's key for an access token (RFC 7523).
    async fn fetch_token(&self, account: &ServiceAccount, now: u64) -> Result<Token, FcmError> {
        let iat = now / 1000;
        let claims = serde_json::json!({
            "iss": account.client_email, "scope": SCOPE, "aud": account.token_uri, "iat": iat, "exp": iat + 3600,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&account.private_key_id);
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| FcmError::Account(e.to_string()))?;
        let assertion = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| FcmError::Account(e.to_string()))?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let url: Uri = account.token_uri.parse().map_err(|_| FcmError::Account("token_uri is not a URL".into()))?;
        let req = crate::outbound::request(Method::POST, &url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .expect("a request of checked parts");
        let (status, answer) = crate::outbound::call(&url, self.timeout, |_| true, &self.tls, req, MAX_ANSWER).await?;
        if status != StatusCode::OK {
            return Err(FcmError::Token(status.as_u16()));
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            expires_in: u64,
        }
        let granted: Granted = serde_json::from_slice(&answer)?;
        let life = Duration::from_secs(granted.expires_in);
        // A short-lived token is used for half its life rather than not at all.
        let keep = life.checked_sub(MARGIN).filter(|k| *k >= life / 2).unwrap_or(life / 2);
        Ok(Token { value: granted.access_token, until: now + keep.as_millis() as u64 })
    }
}

/// Whether an FCM error answer says the token is no longer registered.
fn unregistered(answer: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Answer {
        error: Error,
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        details: Vec<serde_json::Value>,
    }
    serde_json::from_slice::<Answer>(answer)
        .is_ok_and(|a| a.error.details.iter().any(|d| d["errorCode"] == "UNREGISTERED"))
}

/// The `messages:send` body for `job` to `token` (FCM's `Message`): a notification with the
/// event in `data` (FCM data values are strings), Android's collapse key, TTL and priority.
fn message(job: &Job, token: &str, ttl: Duration) -> serde_json::Value {
    let a = &job.alert;
    let high = matches!(a.urgency, Some(crate::alert::Urgency::High));
    let mut data =
        serde_json::json!({"type": "notification", "id": job.id, "event": job.event, "ts": job.ts.to_string()});
    if job.kind == Kind::Withdraw {
        data = serde_json::json!({"type": "withdraw", "id": job.id});
    } else {
        data["data"] = job.data.get().into();
    }
    for (name, value) in [("url", &a.url), ("tag", &a.collapse_key)] {
        if let Some(value) = value {
            data[name] = value.as_str().into();
        }
    }
    let mut message = serde_json::json!({
        "token": token,
        "data": data,
        "android": {"priority": if high { "HIGH" } else { "NORMAL" }, "ttl": format!("{}s", ttl.as_secs())},
    });
    if job.kind == Kind::Notify {
        message["notification"] = serde_json::json!({"title": a.title.as_deref().unwrap_or(&job.event)});
        if let Some(body) = &a.body {
            message["notification"]["body"] = body.as_str().into();
        }
        if let Some(icon) = &a.icon {
            message["notification"]["image"] = icon.as_str().into();
        }
    }
    if let Some(key) = &a.collapse_key {
        message["android"]["collapse_key"] = key.as_str().into();
    }
    serde_json::json!({ "message": message })
}
