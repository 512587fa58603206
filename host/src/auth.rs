//! Built-in client authentication: JWT (HS256 with the tenant's secret, RS256 with its public
//! key) or, for development tenants, the insecure `?user=` mode.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::channel;
use crate::config::AuthConfig;

/// Who a connection belongs to and what it may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub user: String,
    /// Channel patterns the credentials grant; `None` means the tenant's `default_channels`.
    pub channels: Option<Vec<String>>,
    /// Unix time (seconds) when the credentials expire; the connection is closed then.
    pub expires_at: Option<u64>,
}

/// Why credentials were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AuthError {
    #[error("missing credentials: pass ?token= or an Authorization: Bearer header")]
    MissingToken,
    #[error("missing ?user= (tenant uses insecure development auth)")]
    MissingUser,
    #[error("invalid user id: 1-128 characters of A-Z a-z 0-9 _ - . : @")]
    InvalidUser,
    #[error("token expired")]
    Expired,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token algorithm {0} is not accepted by this tenant")]
    Algorithm(String),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Token claims the host reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

/// Accepted credentials: who they name, and when they were issued (the JWT's `iat`), which
/// only the handshake needs (token revocation), so it is not kept with the connection.
pub(crate) struct Verified {
    pub identity: Identity,
    pub issued_at: Option<u64>,
}

/// A tenant's configured way of turning credentials into an [`Identity`].
pub(crate) enum Authenticator {
    Insecure,
    /// Every verification key, unnamed ones first.
    Jwt {
        keys: Vec<Verifier>,
    },
}

/// One JWT verification key, with a validation restricted to its algorithm.
pub(crate) struct Verifier {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    /// Builds the authenticator; the config was validated, so keys parse.
    pub(crate) fn new(config: &AuthConfig) -> Self {
        match config {
            AuthConfig::Insecure => Self::Insecure,
            AuthConfig::Jwt(jwt) => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.leeway = jwt.leeway_secs;
                validation.set_required_spec_claims(&["sub", "exp"]);
                validation.validate_aud = jwt.audience.is_some();
                if let Some(aud) = &jwt.audience {
                    validation.set_audience(&[aud]);
                }
                if let Some(iss) = &jwt.issuer {
                    validation.set_issuer(&[iss]);
                }
                let named = jwt.keys.iter().map(|k| (Some(&k.kid), &k.hs256_secret, &k.rs256_public_key));
                let keys = std::iter::once((None, &jwt.hs256_secret, &jwt.rs256_public_key))
                    .chain(named)
                    .flat_map(|(kid, secret, pem)| verifiers(kid, secret.as_deref(), pem.as_deref(), &validation))
                    .collect();
                Self::Jwt { keys }
            }
        }
    }

    /// Whether this tenant runs the development-only insecure mode.
    pub(crate) fn is_insecure(&self) -> bool {
        matches!(self, Self::Insecure)
    }

    /// Checks credentials: `token` from `?token=` or the bearer header, `user` from `?user=`.
    pub(crate) fn authenticate(&self, token: Option<&str>, user: Option<&str>) -> Result<Verified, AuthError> {
        match self {
            Self::Insecure => {
                let user = user.ok_or(AuthError::MissingUser)?;
                if !channel::valid_name(user) {
                    return Err(AuthError::InvalidUser);
                }
                let identity = Identity { user: user.to_owned(), channels: None, expires_at: None };
                Ok(Verified { identity, issued_at: None })
            }
            Self::Jwt { keys } => {
                let token = token.ok_or(AuthError::MissingToken)?;
                let claims = verify(keys, token)?;
                if !channel::valid_name(&claims.sub) {
                    return Err(AuthError::InvalidUser);
                }
                if let Some(patterns) = &claims.channels
                    && let Some(bad) = patterns.iter().find(|p| !channel::valid_pattern(p))
                {
                    return Err(AuthError::Invalid(format!("invalid channel pattern {bad:?} in `channels` claim")));
                }
                let identity = Identity { user: claims.sub, channels: claims.channels, expires_at: claims.exp };
                Ok(Verified { identity, issued_at: claims.iat })
            }
        }
    }
}

/// The verifiers of one configured key (an HS256 secret and/or an RS256 public key).
fn verifiers(kid: Option<&String>, secret: Option<&str>, pem: Option<&str>, base: &Validation) -> Vec<Verifier> {
    let mut out = Vec::new();
    let mut add = |alg: Algorithm, key: DecodingKey| {
        let validation = Validation { algorithms: vec![alg], ..base.clone() };
        out.push(Verifier { kid: kid.cloned(), alg, key, validation });
    };
    if let Some(secret) = secret {
        add(Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes()));
    }
    if let Some(key) = pem.and_then(|p| DecodingKey::from_rsa_pem(p.as_bytes()).ok()) {
        add(Algorithm::RS256, key);
    }
    out
}

/// Verifies `token` with the key its header names (`kid`), or else with every key of its
/// algorithm in turn, and returns its claims.
fn verify(keys: &[Verifier], token: &str) -> Result<Claims, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
    let mut candidates = keys.iter().filter(|v| v.alg == header.alg).peekable();
    if candidates.peek().is_none() {
        return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
    }
    let mut outcome = Err(AuthError::BadSignature);
    for v in candidates.filter(|v| header.kid.is_none() || v.kid == header.kid) {
        outcome = jsonwebtoken::decode::<Claims>(token, &v.key, &v.validation).map(|d| d.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Invalid(e.to_string()),
            }
        });
        if !matches!(outcome, Err(AuthError::BadSignature)) {
            break;
        }
    }
    if header.kid.is_some()
        && matches!(outcome, Err(AuthError::BadSignature))
        && !keys.iter().any(|v| v.kid == header.kid)
    {
        return Err(AuthError::Invalid(format!("no key with kid {:?}", header.kid.unwrap_or_default())));
    }
    outcome
}
