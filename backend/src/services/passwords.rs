//! Password hashing with argon2id, off the async runtime.
//!
//! A login for an unknown user verifies against a dummy hash made with the same parameters, so the
//! response time does not tell whether an account exists.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::Password;
use crate::error::{Error, Result};

/// Hashes and verifies passwords (argon2id, OWASP's m=19 MiB, t=2, p=1).
pub struct PasswordHasher {
    dummy_hash: String,
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

impl PasswordHasher {
    pub fn new() -> Self {
        // A hash of a random string nobody knows; its parameters match real hashes.
        let random = uuid::Uuid::new_v4().to_string();
        let dummy_hash = hash_blocking(&random).unwrap_or_default();
        Self { dummy_hash }
    }

    /// A PHC-format argon2id hash of `password`.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let password = password.expose().to_owned();
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(Error::internal)?
    }

    /// Whether `password` matches `hash`; with no hash, burns the same work and answers no.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.to_owned();
        let matched = tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(Error::internal)?;
        Ok(known && matched)
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let hasher = PasswordHasher::new();
        let password = Password::parse("correct horse battery").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("correct horse battery", Some(&hash))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse battery", Some(&hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("correct horse battery", None).await.unwrap());
    }

    #[test]
    fn dummy_hash_uses_the_real_parameters() {
        let hasher = PasswordHasher::new();
        let parsed = PasswordHash::new(&hasher.dummy_hash).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.params.get_decimal("m"), Some(Params::DEFAULT_M_COST));
        assert_eq!(parsed.params.get_decimal("t"), Some(Params::DEFAULT_T_COST));
    }
}
