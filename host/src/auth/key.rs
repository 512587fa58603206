//! Verification keys. Each key is bound to the algorithms its kind is for (an HMAC secret to
//! HS*, an RSA key to RS*/PS*, a P-256 key to ES256, ...), and a token is only ever checked
//! with keys bound to its `alg`: a token cannot make an RSA public key act as an HMAC secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::JwtConfig;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];

/// RSA moduli shorter than this many bytes (2048 bits) are refused from a key set.
const MIN_RSA_BYTES: usize = 256;

/// One key, the `kid` it is named by, and the algorithms it verifies.
pub(crate) struct Verifier {
    pub kid: Option<Box<str>>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl Verifier {
    /// Whether this key may check a token with header `alg` and `kid` (a token without a
    /// `kid` is tried with every key of its algorithm).
    pub(crate) fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.algorithms.contains(&alg) && kid.is_none_or(|k| self.kid.as_deref() == Some(k))
    }
}

/// The configured keys (validated, so they parse), unnamed ones first, each limited to the
/// tenant's `allowed` algorithms.
pub(crate) fn configured(jwt: &JwtConfig, allowed: &[Algorithm]) -> Vec<Verifier> {
    let mut out = Vec::new();
    let mut add = |kid: Option<&String>, algorithms: &[Algorithm], key: Option<DecodingKey>| {
        let algorithms: Vec<_> = algorithms.iter().copied().filter(|a| allowed.contains(a)).collect();
        if let Some(key) = key
            && !algorithms.is_empty()
        {
            out.push(Verifier { kid: kid.map(|k| k.as_str().into()), algorithms, key });
        }
    };
    let secret = |s: &Option<String>| s.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes()));
    let rsa = |p: &Option<String>| p.as_ref().and_then(|p| DecodingKey::from_rsa_pem(p.as_bytes()).ok());
    add(None, &[Algorithm::HS256], secret(&jwt.hs256_secret));
    add(None, &[Algorithm::RS256], rsa(&jwt.rs256_public_key));
    for k in &jwt.keys {
        add(Some(&k.kid), &[Algorithm::HS256], secret(&k.hs256_secret));
        add(Some(&k.kid), &[Algorithm::RS256], rsa(&k.rs256_public_key));
        add(Some(&k.kid), HMAC, secret(&k.secret));
        if let Some((algorithms, key)) = k.public_key.as_deref().and_then(public_pem) {
            add(Some(&k.kid), algorithms, Some(key));
        }
    }
    out
}

/// A PEM public key and the algorithms of its kind.
fn public_pem(pem: &str) -> Option<(&'static [Algorithm], DecodingKey)> {
    let pem = pem.as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((RSA, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((EC, key));
    }
    DecodingKey::from_ed_pem(pem).ok().map(|key| (&[Algorithm::EdDSA][..], key))
}

/// Why a key of a key set is not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Unusable {
    #[error("not a JWK: {0}")]
    Malformed(String),
    #[error("not for signatures (use/key_ops)")]
    NotForSigning,
    #[error("a symmetric key has no place in a public key set")]
    Symmetric,
    #[error("key type or curve not supported")]
    Unsupported,
    #[error("RSA key shorter than 2048 bits")]
    WeakRsa,
    #[error("its alg {0} is not for its key type, or not accepted by this tenant")]
    Algorithm(String),
}

/// A key of a provider's key set (JWKS) as a verifier limited to the tenant's `allowed`
/// algorithms: signing keys only (`use` and `key_ops` permitting), RSA of 2048 bits or more,
/// EC P-256/P-384, Ed25519; the JWK's `alg`, when given, narrows the algorithms to that one.
pub(crate) fn from_jwk(value: serde_json::Value, allowed: &[Algorithm]) -> Result<Verifier, Unusable> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| Unusable::Malformed(e.to_string()))?;
    let common = &jwk.common;
    if common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature)
        || common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err(Unusable::NotForSigning);
    }
    let kind: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD.decode(rsa.n.trim_end_matches('=')).unwrap_or_default();
            if n.iter().skip_while(|b| **b == 0).count() < MIN_RSA_BYTES {
                return Err(Unusable::WeakRsa);
            }
            RSA
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return Err(Unusable::Unsupported),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => return Err(Unusable::Symmetric),
        _ => return Err(Unusable::Unsupported),
    };
    let named = match common.key_algorithm {
        Some(alg) => Some(alg.to_string().parse::<Algorithm>().map_err(|_| Unusable::Algorithm(alg.to_string()))?),
        None => None,
    };
    let algorithms: Vec<_> =
        kind.iter().copied().filter(|a| allowed.contains(a) && named.is_none_or(|n| n == *a)).collect();
    if algorithms.is_empty() {
        return Err(Unusable::Algorithm(named.map_or_else(|| format!("{kind:?}"), |a| format!("{a:?}"))));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| Unusable::Malformed(e.to_string()))?;
    Ok(Verifier { kid: common.key_id.as_deref().map(Into::into), algorithms, key })
}

/// Every algorithm there is a key kind for.
pub(crate) fn every_algorithm() -> Vec<Algorithm> {
    [HMAC, RSA, EC, &[Algorithm::EdDSA]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa(bits: usize) -> serde_json::Value {
        json!({"kty": "RSA", "kid": "r", "n": b64(&vec![0xc5; bits / 8]), "e": "AQAB"})
    }

    #[test]
    fn a_key_set_key_verifies_only_its_kind_and_its_alg() {
        let all = every_algorithm();
        let v = from_jwk(rsa(2048), &all).unwrap();
        assert_eq!(v.algorithms, RSA);
        assert!(v.fits(Algorithm::PS256, Some("r")) && !v.fits(Algorithm::HS256, Some("r")));
        assert!(!v.fits(Algorithm::RS256, Some("other")) && v.fits(Algorithm::RS256, None));
        let mut named = rsa(2048);
        named["alg"] = json!("RS384");
        assert_eq!(from_jwk(named, &all).unwrap().algorithms, [Algorithm::RS384]);
        let ec = json!({"kty": "EC", "crv": "P-384", "x": b64(&[1; 48]), "y": b64(&[2; 48])});
        assert_eq!(from_jwk(ec, &all).unwrap().algorithms, [Algorithm::ES384]);
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[3; 32])});
        assert_eq!(from_jwk(ed, &all).unwrap().algorithms, [Algorithm::EdDSA]);
        assert_eq!(
            from_jwk(rsa(2048), &[Algorithm::ES256]).err(),
            Some(Unusable::Algorithm("[RS256, RS384, RS512, PS256, PS384, PS512]".into()))
        );
    }

    #[test]
    fn keys_a_key_set_must_not_hold_are_refused() {
        let all = every_algorithm();
        assert_eq!(
            from_jwk(json!({"kty": "oct", "k": b64(b"0123456789abcdef")}), &all).err(),
            Some(Unusable::Symmetric)
        );
        assert_eq!(from_jwk(rsa(1024), &all).err(), Some(Unusable::WeakRsa));
        let mut enc = rsa(2048);
        enc["use"] = json!("enc");
        assert_eq!(from_jwk(enc, &all).err(), Some(Unusable::NotForSigning));
        let mut wrap = rsa(2048);
        wrap["key_ops"] = json!(["wrapKey"]);
        assert_eq!(from_jwk(wrap, &all).err(), Some(Unusable::NotForSigning));
        let mut mismatched = rsa(2048);
        mismatched["alg"] = json!("ES256");
        assert!(matches!(from_jwk(mismatched, &all), Err(Unusable::Algorithm(_))));
        let p521 = json!({"kty": "EC", "crv": "P-521", "x": b64(&[1; 66]), "y": b64(&[2; 66])});
        assert_eq!(from_jwk(p521, &all).err(), Some(Unusable::Unsupported));
        assert_eq!(from_jwk(json!({"kty": "RSA"}), &all).err(), Some(Unusable::Unsupported), "no modulus");
        assert!(matches!(from_jwk(json!(42), &all), Err(Unusable::Malformed(_))));
    }

    #[test]
    fn configured_keys_are_bound_to_their_kind() {
        let jwt = JwtConfig {
            hs256_secret: Some("0123456789abcdef".into()),
            keys: vec![crate::config::JwtKey {
                kid: "h".into(),
                hs256_secret: None,
                rs256_public_key: None,
                secret: Some("0123456789abcdef0123".into()),
                public_key: None,
            }],
            ..JwtConfig::default()
        };
        let keys = configured(&jwt, &every_algorithm());
        assert_eq!(keys[0].algorithms, [Algorithm::HS256]);
        assert_eq!(keys[1].algorithms, HMAC);
        assert!(configured(&jwt, &[Algorithm::RS256]).is_empty(), "an allow-list without HMAC drops the secrets");
    }
}
