//! The application server's identification to push services (VAPID, RFC 8292): a P-256 key
//! pair whose public half the browser subscribed with, and per request an ES256 JWT naming
//! the push service's origin (`aud`), an expiry within 24 hours and a contact (`sub`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// How long a VAPID token is valid: push services refuse more than 24 hours.
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 12 * 3600;

/// Why a VAPID key could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VapidError {
    #[error("the VAPID private key is not base64url PKCS#8 of a P-256 key")]
    Key,
    #[error("signing failed")]
    Sign,
}

/// A VAPID key pair.
pub(crate) struct Vapid {
    pair: EcdsaKeyPair,
}

/// A new key pair: the private key as base64url PKCS#8 (kept secret), the public key as
/// base64url of its 65-byte uncompressed point (what browsers subscribe with).
pub(crate) fn generate() -> (String, String) {
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("the system's random numbers");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("a key ring just made");
    (URL_SAFE_NO_PAD.encode(pkcs8.as_ref()), URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()))
}

impl Vapid {
    /// The key pair of a base64url PKCS#8 private key (`generate`'s first half).
    pub(crate) fn from_private(private: &str) -> Result<Self, VapidError> {
        let der = URL_SAFE_NO_PAD.decode(private.trim()).map_err(|_| VapidError::Key)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .map_err(|_| VapidError::Key)?;
        Ok(Self { pair })
    }

    /// The public key, base64url of its uncompressed point.
    pub(crate) fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    /// The `Authorization` header value for a request to a push service at `origin`
    /// (`https://host[:port]`), issued at `now` (Unix seconds), naming `contact`.
    pub(crate) fn authorization(&self, origin: &str, contact: &str, now: u64) -> Result<String, VapidError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({ "aud": origin, "exp": now + TOKEN_LIFETIME_SECS, "sub": contact });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let signature = self.pair.sign(&SystemRandom::new(), input.as_bytes()).map_err(|_| VapidError::Sign)?;
        Ok(format!("vapid t={input}.{}, k={}", URL_SAFE_NO_PAD.encode(signature.as_ref()), self.public_key()))
    }
}
