//! A Web Push message encrypted for one subscription (RFC 8291): an ephemeral P-256 key
//! agreed with the browser's `p256dh` key, mixed with its `auth` secret, gives the content
//! key and nonce of one `aes128gcm` record (RFC 8188), sent as the request body.

use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, agreement, hkdf};

/// Record size announced in the header; one record holds the whole message.
const RECORD_SIZE: u32 = 4096;

/// The header before the record: salt, record size, key id length, the sender's key.
const HEADER: usize = 16 + 4 + 1 + 65;

/// The largest payload of one message: push services take bodies of up to 4096 bytes
/// (RFC 8030), which hold the header, the payload, the padding delimiter and the tag.
pub(crate) const MAX_PAYLOAD: usize = RECORD_SIZE as usize - HEADER - 1 - 16;

/// Why a message could not be encrypted for a subscription.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EncryptError {
    #[error("the subscription's p256dh is not an uncompressed P-256 public key (65 bytes)")]
    PublicKey,
    #[error("the subscription's auth secret is not 16 bytes")]
    AuthSecret,
    #[error("the payload is {0} bytes; one Web Push message holds at most {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("the system's random number generator failed")]
    Random,
}

/// A length for HKDF output.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[&[u8]], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    prk.expand(info, Len(len)).and_then(|okm| okm.fill(&mut out)).expect("HKDF output of a valid length");
    out
}

/// `payload` encrypted for the subscription with browser key `p256dh` (65 bytes) and
/// `auth` secret (16 bytes): the `aes128gcm` body of a push request.
pub(crate) fn encrypt(payload: &[u8], p256dh: &[u8], auth: &[u8]) -> Result<Vec<u8>, EncryptError> {
    if p256dh.len() != 65 || p256dh[0] != 4 {
        return Err(EncryptError::PublicKey);
    }
    if auth.len() != 16 {
        return Err(EncryptError::AuthSecret);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(EncryptError::TooLarge(payload.len()));
    }
    let rng = SystemRandom::new();
    let ephemeral =
        agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).map_err(|_| EncryptError::Random)?;
    let own_public = ephemeral.compute_public_key().map_err(|_| EncryptError::Random)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, p256dh);
    let shared =
        agreement::agree_ephemeral(ephemeral, &peer, |secret| secret.to_vec()).map_err(|_| EncryptError::PublicKey)?;
    // RFC 8291, 3.3: the input keying material binds both public keys and the auth secret.
    let prk_key = hkdf::Salt::new(hkdf::HKDF_SHA256, auth).extract(&shared);
    let ikm = expand(&prk_key, &[b"WebPush: info\0", p256dh, own_public.as_ref()], 32);
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| EncryptError::Random)?;
    // RFC 8188, 2.2: the content key and nonce of the record.
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&ikm);
    let cek = expand(&prk, &[b"Content-Encoding: aes128gcm\0"], 16);
    let nonce = expand(&prk, &[b"Content-Encoding: nonce\0"], 12);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).expect("a 16-byte key"));
    let mut record = Vec::with_capacity(payload.len() + 17);
    record.extend_from_slice(payload);
    // The last (and only) record ends with the delimiter 2, unpadded.
    record.push(2);
    let nonce = aead::Nonce::try_assume_unique_for_key(&nonce).expect("a 12-byte nonce");
    key.seal_in_place_append_tag(nonce, aead::Aad::empty(), &mut record).expect("a record within AES-GCM's limits");
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + record.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(own_public.as_ref().len() as u8);
    body.extend_from_slice(own_public.as_ref());
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_subscriptions_and_payloads_are_refused() {
        let key = [4u8; 65];
        assert_eq!(encrypt(b"x", &key[..64], &[0; 16]), Err(EncryptError::PublicKey));
        assert_eq!(encrypt(b"x", &key, &[0; 15]), Err(EncryptError::AuthSecret));
        assert_eq!(encrypt(&vec![0; MAX_PAYLOAD + 1], &key, &[0; 16]), Err(EncryptError::TooLarge(MAX_PAYLOAD + 1)));
        assert_eq!(encrypt(b"x", &key, &[0; 16]), Err(EncryptError::PublicKey), "not a point on the curve");
    }
}
