//! JWTs (HS256, signed with the instance secret key): users' access and refresh tokens, units' tokens,
//! and short-lived bundle download tokens.
//!
//! Each user token carries the user's `token_version`; bumping it (password change, block, log-out) revokes
//! every token issued before. Access tokens are short-lived; refresh tokens only buy new pairs.
//!
//! A unit's token lives in its env.json on the device, so it has no expiry (devices run for years without
//! anyone re-flashing them); it carries the unit's `uuid` in the claim the reference client reads, and the
//! unit's own `token_version`, which regenerating the token bumps.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// What a token is for; a refresh token is never accepted as an access token and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Refresh,
}

/// The claims Pepeunit signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub typ: TokenKind,
    pub ver: i32,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// The claims of a unit's token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitClaims {
    pub uuid: Uuid,
    pub typ: String,
    pub ver: i32,
    pub iat: i64,
}

const UNIT_TOKEN: &str = "unit";
const DOWNLOAD_TOKEN: &str = "download";

/// The claims of a bundle download link: one unit, a few minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DownloadClaims {
    sub: Uuid,
    typ: String,
    exp: i64,
}

/// A freshly issued pair.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
}

/// Signs and checks tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    unit_validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl TokenIssuer {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        // No leeway: an expired token is refused at once (one server issues and checks, one clock).
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "sub"]);
        let mut unit_validation = Validation::new(Algorithm::HS256);
        unit_validation.validate_exp = false;
        unit_validation.required_spec_claims.clear();
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            unit_validation,
            access_ttl,
            refresh_ttl,
        }
    }

    /// Signs arbitrary claims; services use [`TokenIssuer::issue_pair`].
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(Error::internal)
    }

    fn issue(&self, user: Uuid, version: i32, kind: TokenKind) -> Result<(String, DateTime<Utc>)> {
        let ttl = match kind {
            TokenKind::Access => self.access_ttl,
            TokenKind::Refresh => self.refresh_ttl,
        };
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(ttl).map_err(Error::internal)?;
        let claims = Claims {
            sub: user,
            typ: kind,
            ver: version,
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires.timestamp(),
        };
        Ok((self.sign(&claims)?, expires))
    }

    /// A new access + refresh pair for `user` at `version`.
    pub fn issue_pair(&self, user: Uuid, version: i32) -> Result<TokenPair> {
        let (access_token, access_expires_at) = self.issue(user, version, TokenKind::Access)?;
        let (refresh_token, refresh_expires_at) = self.issue(user, version, TokenKind::Refresh)?;
        Ok(TokenPair {
            access_token,
            access_expires_at,
            refresh_token,
            refresh_expires_at,
        })
    }

    /// The token written into a unit's env.json.
    ///
    /// The reference client reads `uuid` by decoding the payload with *standard* base64, which drops the
    /// URL-safe alphabet's `-` and `_`. Base64url of ASCII text only yields those for the bytes `>`, `?`,
    /// `~` and DEL, none of which these claims (a uuid, a word, numbers) can contain.
    pub fn issue_unit(&self, unit: Uuid, version: i32) -> Result<String> {
        let claims = UnitClaims {
            uuid: unit,
            typ: UNIT_TOKEN.to_owned(),
            ver: version,
            iat: Utc::now().timestamp(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(Error::internal)
    }

    /// Checks a unit token's signature and kind; whether its version is current is the caller's check.
    pub fn verify_unit(&self, token: &str) -> Result<UnitClaims> {
        let data = decode::<UnitClaims>(token, &self.decoding, &self.unit_validation)
            .map_err(|_| Error::InvalidToken)?;
        if data.claims.typ != UNIT_TOKEN {
            return Err(Error::InvalidToken);
        }
        Ok(data.claims)
    }

    /// A link token that lets a browser download one unit's bundle for `ttl`.
    pub fn issue_download(&self, unit: Uuid, ttl: Duration) -> Result<String> {
        let ttl = chrono::Duration::from_std(ttl).map_err(Error::internal)?;
        let claims = DownloadClaims {
            sub: unit,
            typ: DOWNLOAD_TOKEN.to_owned(),
            exp: (Utc::now() + ttl).timestamp(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(Error::internal)
    }

    /// The unit a download token is for, if it is valid and unexpired.
    pub fn verify_download(&self, token: &str) -> Result<Uuid> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<DownloadClaims>(token, &self.decoding, &validation)
            .map_err(|_| Error::InvalidToken)?;
        if data.claims.typ != DOWNLOAD_TOKEN {
            return Err(Error::InvalidToken);
        }
        Ok(data.claims.sub)
    }

    /// Checks signature, algorithm, time window and kind; says only "invalid" to the caller.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            Error::InvalidToken
        })?;
        if data.claims.typ != kind {
            return Err(Error::InvalidToken);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(secret: &[u8]) -> TokenIssuer {
        TokenIssuer::new(secret, Duration::from_secs(60), Duration::from_secs(3600))
    }

    fn claims(nbf_offset: i64, exp_offset: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            sub: Uuid::new_v4(),
            typ: TokenKind::Access,
            ver: 0,
            iat: now,
            nbf: now + nbf_offset,
            exp: now + exp_offset,
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_fresh_pair_verifies_by_kind_only() {
        let tokens = issuer(KEY);
        let pair = tokens.issue_pair(Uuid::new_v4(), 3).unwrap();
        assert_eq!(
            tokens
                .verify(&pair.access_token, TokenKind::Access)
                .unwrap()
                .ver,
            3
        );
        assert!(
            tokens
                .verify(&pair.refresh_token, TokenKind::Refresh)
                .is_ok()
        );
        assert!(
            tokens
                .verify(&pair.refresh_token, TokenKind::Access)
                .is_err()
        );
        assert!(
            tokens
                .verify(&pair.access_token, TokenKind::Refresh)
                .is_err()
        );
    }

    #[test]
    fn expired_not_yet_valid_and_foreign_tokens_are_refused() {
        let tokens = issuer(KEY);
        let expired = tokens.sign(&claims(-7200, -3600)).unwrap();
        let early = tokens.sign(&claims(3600, 7200)).unwrap();
        let foreign = issuer(b"another-key-another-key-another-key!")
            .sign(&claims(0, 60))
            .unwrap();
        for token in [expired, early, foreign, "garbage".to_owned()] {
            assert!(matches!(
                tokens.verify(&token, TokenKind::Access),
                Err(Error::InvalidToken)
            ));
        }
    }

    #[test]
    fn token_kinds_never_stand_in_for_each_other() {
        let tokens = issuer(KEY);
        let unit = Uuid::new_v4();
        let unit_token = tokens.issue_unit(unit, 2).unwrap();
        let claims = tokens.verify_unit(&unit_token).unwrap();
        assert_eq!((claims.uuid, claims.ver), (unit, 2));
        let download = tokens
            .issue_download(unit, Duration::from_secs(60))
            .unwrap();
        assert_eq!(tokens.verify_download(&download).unwrap(), unit);
        let access = tokens.issue_pair(unit, 0).unwrap().access_token;
        assert!(tokens.verify_unit(&access).is_err());
        assert!(tokens.verify_unit(&download).is_err());
        assert!(tokens.verify_download(&unit_token).is_err());
        assert!(tokens.verify_download(&access).is_err());
        assert!(tokens.verify(&unit_token, TokenKind::Access).is_err());
        assert!(
            issuer(b"another-key-another-key-another-key!")
                .verify_unit(&unit_token)
                .is_err()
        );
    }

    #[test]
    fn unit_tokens_decode_with_standard_base64() {
        use base64::Engine;
        let tokens = issuer(KEY);
        for version in 0..200 {
            let unit = Uuid::new_v4();
            let token = tokens.issue_unit(unit, version).unwrap();
            let payload = token.split('.').nth(1).unwrap();
            assert!(!payload.contains(['-', '_']), "{payload}");
            let padded = format!("{payload}{}", "=".repeat((4 - payload.len() % 4) % 4));
            let json: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(padded)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(json["uuid"], unit.to_string());
        }
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(serde_json::to_vec(&claims(0, 60)).unwrap());
        let token = format!("{header}.{body}.");
        assert!(issuer(KEY).verify(&token, TokenKind::Access).is_err());
    }
}
