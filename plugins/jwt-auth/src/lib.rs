//! `jwt-auth`: verifies HS256 JWTs and turns their claims into an identity.
//!
//! Config:
//! - `secret` (required): the HS256 key.
//! - `attributes` (optional): comma-separated claim names copied into subscriber attributes
//!   (default `plan,locale`).
//! - `issuer` (optional): required `iss` claim.
//!
//! Claims: `sub` (user), `exp` (required), optional `channels` (patterns).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use notify_plugin_sdk::{Authenticator, ConnectRequest, Deny, Identity, config, log};
use serde_json::Value;
use sha2::Sha256;

struct JwtAuth;

impl Authenticator for JwtAuth {
    fn authenticate(req: ConnectRequest) -> Result<Identity, Deny> {
        let Some(secret) = config("secret") else {
            log::error("jwt-auth: no `secret` in plugin config");
            return Err(Deny::unauthorized("authentication is not configured"));
        };
        let token = req.bearer_token().ok_or_else(|| Deny::unauthorized("missing token"))?;
        let claims = verify(token, secret.as_bytes())?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let exp = claims["exp"].as_u64().ok_or_else(|| Deny::unauthorized("token has no exp"))?;
        if exp <= now {
            return Err(Deny::unauthorized("token expired"));
        }
        if let Some(iss) = config("issuer")
            && claims["iss"].as_str() != Some(iss.as_str())
        {
            return Err(Deny::forbidden("wrong issuer"));
        }
        let sub = claims["sub"].as_str().ok_or_else(|| Deny::unauthorized("token has no sub"))?;
        let mut identity = Identity::new(sub).expiring_at(exp);
        if let Some(channels) = claims["channels"].as_array() {
            identity = identity.with_channels(channels.iter().filter_map(Value::as_str));
        }
        let names = config("attributes").unwrap_or_else(|| "plan,locale".into());
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Some(value) = claims[name].as_str() {
                identity = identity.with_attribute(name, value);
            }
        }
        Ok(identity)
    }
}

fn verify(token: &str, secret: &[u8]) -> Result<Value, Deny> {
    let bad = || Deny::unauthorized("malformed token");
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(|_| bad())?).map_err(|_| bad())?;
    if header["alg"] != "HS256" {
        return Err(Deny::unauthorized("only HS256 tokens are accepted"));
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| bad())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| bad())?;
    mac.update(&token.as_bytes()[..header_len(token)]);
    mac.verify_slice(&signature).map_err(|_| Deny::unauthorized("invalid token signature"))?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?).map_err(|_| bad())
}

/// Length of `header.payload`, the signed part.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

notify_plugin_sdk::export_authenticator!(JwtAuth);
