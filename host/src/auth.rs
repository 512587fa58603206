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
}

/// A tenant's configured way of turning credentials into an [`Identity`].
pub(crate) enum Authenticator {
    Insecure,
    /// One key per accepted algorithm, each with a validation restricted to it.
    Jwt {
        keys: Vec<(Algorithm, DecodingKey, Validation)>,
    },
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
                let for_alg = |alg: Algorithm| Validation { algorithms: vec![alg], ..validation.clone() };
                let mut keys = Vec::new();
                if let Some(secret) = &jwt.hs256_secret {
                    let key = DecodingKey::from_secret(secret.as_bytes());
                    keys.push((Algorithm::HS256, key, for_alg(Algorithm::HS256)));
                }
                if let Some(pem) = &jwt.rs256_public_key
                    && let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes())
                {
                    keys.push((Algorithm::RS256, key, for_alg(Algorithm::RS256)));
                }
                Self::Jwt { keys }
            }
        }
    }

    /// Whether this tenant runs the development-only insecure mode.
    pub(crate) fn is_insecure(&self) -> bool {
        matches!(self, Self::Insecure)
    }

    /// Checks credentials: `token` from `?token=` or the bearer header, `user` from `?user=`.
    pub(crate) fn authenticate(&self, token: Option<&str>, user: Option<&str>) -> Result<Identity, AuthError> {
        match self {
            Self::Insecure => {
                let user = user.ok_or(AuthError::MissingUser)?;
                if !channel::valid_name(user) {
                    return Err(AuthError::InvalidUser);
                }
                Ok(Identity { user: user.to_owned(), channels: None, expires_at: None })
            }
            Self::Jwt { keys } => {
                let token = token.ok_or(AuthError::MissingToken)?;
                let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
                let (_, key, validation) = keys
                    .iter()
                    .find(|(alg, ..)| *alg == header.alg)
                    .ok_or_else(|| AuthError::Algorithm(format!("{:?}", header.alg)))?;
                let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        _ => AuthError::Invalid(e.to_string()),
                    }
                })?;
                let claims = data.claims;
                if !channel::valid_name(&claims.sub) {
                    return Err(AuthError::InvalidUser);
                }
                if let Some(patterns) = &claims.channels
                    && let Some(bad) = patterns.iter().find(|p| !channel::valid_pattern(p))
                {
                    return Err(AuthError::Invalid(format!("invalid channel pattern {bad:?} in `channels` claim")));
                }
                Ok(Identity { user: claims.sub, channels: claims.channels, expires_at: claims.exp })
            }
        }
    }
}
