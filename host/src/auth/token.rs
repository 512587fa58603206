//! Checking one JWT: its header, its signature with the keys that fit it, and the claims the
//! tenant requires (`exp`, `nbf` and `iat` with leeway, `iss`, `aud`), then reading the user
//! id and the channel grants from the claims the tenant names.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

use super::key::Verifier;
use super::{AuthError, Identity, Verified};
use crate::channel;
use crate::config::JwtConfig;

/// What a tenant requires of a token's claims, and where it finds the user and the grants.
pub(crate) struct Rules {
    /// The checks of `exp` (with its leeway), `nbf`, `iss` and `aud`, one per algorithm the
    /// tenant accepts: jsonwebtoken wants every algorithm of a validation to be of the key's
    /// family, so each names its own.
    validations: Vec<Validation>,
    leeway: u64,
    user_claim: Box<str>,
    channels_claim: Box<str>,
}

impl Rules {
    pub(crate) fn leeway(&self) -> u64 {
        self.leeway
    }

    pub(crate) fn new(jwt: &JwtConfig, allowed: &[Algorithm]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = jwt.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = !jwt.audience.is_empty();
        if !jwt.audience.is_empty() {
            validation.set_audience(&jwt.audience);
        }
        if !jwt.issuer.is_empty() {
            validation.set_issuer(&jwt.issuer);
        }
        let validations =
            allowed.iter().map(|&alg| Validation { algorithms: vec![alg], ..validation.clone() }).collect();
        Self {
            validations,
            leeway: jwt.leeway_secs,
            user_claim: jwt.user_claim.as_deref().unwrap_or("sub").into(),
            channels_claim: jwt.channels_claim.as_deref().unwrap_or("channels").into(),
        }
    }
}

/// The header of `token`; `alg: none` and algorithms no key kind exists for are named. A
/// header with `crit` is refused: it names extensions the token must not be accepted without
/// understanding (RFC 7515, 4.1.11), and notify understands none.
pub(crate) fn header(token: &str) -> Result<Header, AuthError> {
    match jsonwebtoken::decode_header(token) {
        Ok(header) if header.crit.is_some() => {
            Err(AuthError::Invalid("the header's `crit` names extensions this host does not support".into()))
        }
        Ok(header) => Ok(header),
        // Only a refused header is read again, to name an algorithm jsonwebtoken has no name for.
        Err(e) => Err(match raw_header(token).as_ref().and_then(|h| h.get("alg")?.as_str()) {
            Some(alg) if alg.parse::<Algorithm>().is_err() => AuthError::Algorithm(alg.to_owned()),
            _ => AuthError::Invalid(e.to_string()),
        }),
    }
}

/// A token's header as JSON, read without trusting anything in it.
fn raw_header(token: &str) -> Option<Value> {
    use base64::Engine;
    let first = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(first).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Checks `token` with each of `keys` (all fit its header) until one holds its signature,
/// then checks and reads its claims.
pub(crate) fn check<'a>(
    rules: &Rules,
    alg: Algorithm,
    keys: impl Iterator<Item = &'a Verifier>,
    token: &str,
) -> Result<Verified, AuthError> {
    let validation = rules.validations.iter().find(|v| v.algorithms[0] == alg);
    let validation = validation.ok_or_else(|| AuthError::Algorithm(format!("{alg:?}")))?;
    let mut outcome = Err(AuthError::BadSignature);
    for v in keys {
        outcome =
            jsonwebtoken::decode::<Map<String, Value>>(token, &v.key, validation).map(|d| d.claims).map_err(refusal);
        if !matches!(outcome, Err(AuthError::BadSignature)) {
            break;
        }
    }
    identity(rules, outcome?)
}

fn refusal(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::Invalid("`iss` is not an issuer this tenant accepts".into()),
        ErrorKind::InvalidAudience => AuthError::Invalid("`aud` does not name an audience of this tenant".into()),
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("missing `{claim}` claim")),
        _ => AuthError::Invalid(e.to_string()),
    }
}

/// The identity the verified `claims` give.
fn identity(rules: &Rules, claims: Map<String, Value>) -> Result<Verified, AuthError> {
    let now = jsonwebtoken::get_current_timestamp();
    let issued_at =
        claims.get("iat").map(|v| v.as_u64().ok_or_else(|| invalid("`iat` is not a number"))).transpose()?;
    if issued_at.is_some_and(|iat| iat > now + rules.leeway()) {
        return Err(AuthError::Invalid("`iat` is in the future".into()));
    }
    let user = match claim(&claims, &rules.user_claim) {
        Some(Value::String(user)) if channel::valid_name(user) => user.clone(),
        Some(Value::String(_)) => return Err(AuthError::InvalidUser),
        Some(_) => return Err(invalid(format!("`{}` is not a string", rules.user_claim))),
        None => return Err(invalid(format!("missing `{}` claim", rules.user_claim))),
    };
    let channels = match claim(&claims, &rules.channels_claim) {
        None | Some(Value::Null) => None,
        Some(value) => Some(patterns(value, &rules.channels_claim)?),
    };
    let expires_at = claims.get("exp").and_then(Value::as_u64);
    let token_id = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
    let channel = claims.get("channel").and_then(Value::as_str).map(str::to_owned);
    Ok(Verified { identity: Identity { user, channels, expires_at }, issued_at, token_id, channel })
}

/// The claim named `name`, or else the one its dotted path reaches (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |value, part| value.get(part))
    })
}

/// The channel patterns of a grants claim: a list of valid patterns.
fn patterns(value: &Value, name: &str) -> Result<Vec<String>, AuthError> {
    let list = value.as_array().ok_or_else(|| invalid(format!("`{name}` is not a list")))?;
    list.iter()
        .map(|p| match p.as_str() {
            Some(p) if channel::valid_pattern(p) => Ok(p.to_owned()),
            _ => Err(invalid(format!("invalid channel pattern {p} in `{name}` claim"))),
        })
        .collect()
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::Invalid(message.into())
}
