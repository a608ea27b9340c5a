//! AES-256-GCM encryption of secrets at rest (repository credentials, unit env.json, webhook secrets).
//!
//! The master key lives outside the database (the secrets file or `PEPEUNIT_ENCRYPTION_KEY`), so a stolen
//! database dump alone reveals nothing. Every ciphertext carries its own random 96-bit nonce.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

const NONCE_LEN: usize = 12;

/// A value could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the encryption key must be base64 of exactly 32 bytes")]
    BadKey,
    #[error("ciphertext is corrupt or was made under another key")]
    Corrupt,
}

/// The instance master key.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(********)")
    }
}

impl MasterKey {
    /// Parses the base64 form of a 32-byte key.
    pub fn parse(encoded: &str) -> Result<Self, CryptoError> {
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| CryptoError::BadKey)?;
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let key = Key::<Aes256Gcm>::from_slice(&bytes);
        Ok(Self {
            cipher: Aes256Gcm::new(key),
        })
    }

    /// A new random key in its base64 form.
    pub fn generate_encoded() -> String {
        BASE64.encode(Aes256Gcm::generate_key(OsRng))
    }

    /// Encrypts `plaintext` into `base64(nonce || ciphertext || tag)`.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| CryptoError::Corrupt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(BASE64.encode(out))
    }

    /// Reverses [`MasterKey::encrypt`]; a changed byte or another key gives [`CryptoError::Corrupt`].
    pub fn decrypt(&self, encoded: &str) -> Result<Vec<u8>, CryptoError> {
        let bytes = BASE64.decode(encoded).map_err(|_| CryptoError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> MasterKey {
        MasterKey::parse(&MasterKey::generate_encoded()).unwrap()
    }

    #[test]
    fn another_key_cannot_decrypt() {
        let sealed = key().encrypt(b"token").unwrap();
        assert!(matches!(key().decrypt(&sealed), Err(CryptoError::Corrupt)));
    }

    #[test]
    fn same_plaintext_encrypts_differently() {
        let k = key();
        assert_ne!(k.encrypt(b"x").unwrap(), k.encrypt(b"x").unwrap());
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
        assert!(MasterKey::parse("not base64!").is_err());
    }

    proptest! {
        #[test]
        fn round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..512)) {
            let k = key();
            prop_assert_eq!(k.decrypt(&k.encrypt(&plaintext).unwrap()).unwrap(), plaintext);
        }

        #[test]
        fn any_flipped_byte_is_detected(plaintext in proptest::collection::vec(any::<u8>(), 1..64), at in any::<prop::sample::Index>()) {
            let k = key();
            let mut raw = BASE64.decode(k.encrypt(&plaintext).unwrap()).unwrap();
            let i = at.index(raw.len());
            raw[i] ^= 0x01;
            prop_assert!(k.decrypt(&BASE64.encode(raw)).is_err());
        }
    }
}
