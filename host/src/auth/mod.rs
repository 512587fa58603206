//! Built-in client authentication: JWT (keys from the config or the tenant's identity
//! provider's key set, every common algorithm, the tenant's claim checks) or, for development
//! tenants, the insecure `?user=` mode.

mod crypto;
mod jwks;
mod key;
mod token;

use std::sync::Arc;

use jsonwebtoken::Algorithm;

pub(crate) use jwks::{JwksStatus, render_metrics};

use crate::channel;
use crate::config::{AuthConfig, JwtConfig};
use jwks::{Jwks, Refresh};
use key::Verifier;
use token::Rules;

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
    #[error("token not valid yet (`nbf`)")]
    NotYetValid,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token algorithm {0} is not accepted by this tenant")]
    Algorithm(String),
    #[error("no key with kid {kid:?}{why}")]
    UnknownKey { kid: String, why: String },
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Accepted credentials: who they name, and when they were issued and under which id (the
/// JWT's `iat` and `jti`), which only the handshake needs (token revocation), so they are not
/// kept with the connection.
pub(crate) struct Verified {
    pub identity: Identity,
    pub issued_at: Option<u64>,
    pub token_id: Option<String>,
    /// The `channel` claim: the one channel a subscription token grants.
    pub channel: Option<String>,
}

/// A tenant's configured way of turning credentials into an [`Identity`].
pub(crate) enum Authenticator {
    Insecure,
    Jwt(Box<Jwt>),
}

/// JWT auth: the keys, the provider's key set, the claim rules.
pub(crate) struct Jwt {
    rules: Rules,
    /// The algorithms the tenant accepts (all there are keys for when it names none).
    allowed: Vec<Algorithm>,
    /// The configured keys, unnamed ones first.
    keys: Vec<Verifier>,
    jwks: Option<Arc<Jwks>>,
}

impl Authenticator {
    /// Builds the authenticator; the config was validated, so keys parse. A key set of the
    /// `previous` authenticator of the tenant is kept when it is the same.
    pub(crate) fn new(config: &AuthConfig, previous: Option<&Authenticator>) -> Self {
        crypto::install();
        match config {
            AuthConfig::Insecure => Self::Insecure,
            AuthConfig::Jwt(jwt) => Self::Jwt(Box::new(Jwt::new(jwt, previous))),
        }
    }

    /// Whether this tenant runs the development-only insecure mode.
    pub(crate) fn is_insecure(&self) -> bool {
        matches!(self, Self::Insecure)
    }

    /// The clock skew tolerated on expiry: an open connection is closed this long after its
    /// credentials' `exp`.
    pub(crate) fn leeway(&self) -> std::time::Duration {
        match self {
            Self::Jwt(jwt) => std::time::Duration::from_secs(jwt.rules.leeway()),
            Self::Insecure => std::time::Duration::ZERO,
        }
    }

    /// Waits until the tenant's key set was fetched once (or failed to be), so that what is
    /// said of it right after the tenant was set up is the outcome.
    pub(crate) async fn first_fetch(&self) {
        if let Self::Jwt(jwt) = self
            && let Some(jwks) = &jwt.jwks
        {
            jwks.first_fetch().await;
        }
    }

    /// The state of the tenant's key set, if it has one.
    pub(crate) fn jwks(&self) -> Option<JwksStatus> {
        match self {
            Self::Jwt(jwt) => jwt.jwks.as_ref().map(|j| j.status()),
            Self::Insecure => None,
        }
    }

    /// Checks credentials: `token` from `?token=` or the bearer header, `user` from `?user=`.
    /// A token naming a key the provider's key set lacks waits for one fetch of the set.
    pub(crate) async fn authenticate(&self, token: Option<&str>, user: Option<&str>) -> Result<Verified, AuthError> {
        match self {
            Self::Insecure => insecure(user),
            Self::Jwt(jwt) => jwt.authenticate(token.ok_or(AuthError::MissingToken)?).await,
        }
    }

    /// As [`Self::authenticate`], but with the keys at hand only.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn authenticate_now(&self, token: Option<&str>, user: Option<&str>) -> Result<Verified, AuthError> {
        match self {
            Self::Insecure => insecure(user),
            Self::Jwt(jwt) => jwt.check(token.ok_or(AuthError::MissingToken)?),
        }
    }
}

fn insecure(user: Option<&str>) -> Result<Verified, AuthError> {
    let user = user.ok_or(AuthError::MissingUser)?;
    if !channel::valid_name(user) {
        return Err(AuthError::InvalidUser);
    }
    let identity = Identity { user: user.to_owned(), channels: None, expires_at: None };
    Ok(Verified { identity, issued_at: None, token_id: None, channel: None })
}

impl Jwt {
    fn new(config: &JwtConfig, previous: Option<&Authenticator>) -> Self {
        let allowed = match config.algorithms.is_empty() {
            true => key::every_algorithm(),
            false => config.algorithms.iter().filter_map(|a| a.parse().ok()).collect(),
        };
        let kept = match previous {
            Some(Authenticator::Jwt(old)) => old.jwks.clone(),
            _ => None,
        };
        let jwks = config.jwks_url.as_deref().map(|url| match kept {
            Some(set) if set.same(url, config, &allowed) => set,
            _ => Jwks::start(url, config, &allowed),
        });
        Self { rules: Rules::new(config, &allowed), keys: key::configured(config, &allowed), allowed, jwks }
    }

    async fn authenticate(&self, token: &str) -> Result<Verified, AuthError> {
        let outcome = self.check(token);
        let (Err(AuthError::UnknownKey { kid, .. }), Some(jwks)) = (&outcome, &self.jwks) else {
            return outcome;
        };
        jwks.ensure_running();
        let why = match jwks.refresh_for_unknown_kid().await {
            Refresh::Done => return self.check(token),
            Refresh::Limited(cooldown) => {
                format!(" in the key set (it is fetched again for an unknown kid at most every {cooldown:?})")
            }
            Refresh::Failed(e) => format!(" in the key set, which could not be fetched: {e}"),
        };
        Err(AuthError::UnknownKey { kid: kid.clone(), why })
    }

    /// Checks `token` with the keys that fit its header.
    fn check(&self, token: &str) -> Result<Verified, AuthError> {
        let header = token::header(token)?;
        let alg = header.alg;
        if !self.allowed.contains(&alg) {
            return Err(AuthError::Algorithm(format!("{alg:?}")));
        }
        let set = self.jwks.as_ref().map(|j| j.keys()).unwrap_or_default();
        let all = || self.keys.iter().chain(set.iter());
        let kid = header.kid.as_deref();
        if !all().any(|v| v.fits(alg, kid)) {
            return Err(match kid {
                Some(kid) if all().any(|v| v.kid.as_deref() == Some(kid)) => {
                    AuthError::Algorithm(format!("{alg:?} (key {kid:?} is for another algorithm)"))
                }
                Some(kid) => AuthError::UnknownKey { kid: kid.to_owned(), why: String::new() },
                None => AuthError::Algorithm(format!("{alg:?} (no key of this tenant is for it)")),
            });
        }
        token::check(&self.rules, alg, all().filter(|v| v.fits(alg, kid)), token)
    }
}
