//! E-mail: verification of new accounts and password reset by single-use, expiring links.
//!
//! With `smtp_url` configured an admin may turn on `emailVerification`: new accounts start unverified and
//! get a link that verifies them. Anyone may ask for a password-reset link to their address. A link carries
//! a random token; only its SHA-256 is stored (`mail_tokens`), it works once, and not after
//! `mail_link_ttl_seconds`. A reset revokes every session of the account (its token version moves on).
//! Requests answer the same whether or not the address has an account, and are rate-limited per address
//! and per client address. Without SMTP, admins verify accounts by hand.

pub mod outbox;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::Utc;
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, Set,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{Config, ConfigError};
use crate::domain::{Email, InvalidValue, Password, UserStatus};
use crate::entities::{mail_tokens, users};
use crate::error::{Error, Result};
use crate::services::{Services, settings};
use outbox::{Job, Letter, Outbox, Smtp};

const VERIFY: &str = "verify";
const RESET: &str = "reset";

/// A request counter per key over a fixed window, held in memory.
struct RateWindow {
    max: u32,
    window: Duration,
    hits: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Above this many tracked keys, expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl RateWindow {
    fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `key`; refuses past `max` in the window.
    fn hit(&self, key: &str) -> Result<()> {
        let mut hits = self.hits.lock().map_err(Error::internal)?;
        let now = Instant::now();
        if hits.len() > SWEEP_ABOVE {
            let window = self.window;
            hits.retain(|_, (_, since)| now.duration_since(*since) < window);
        }
        let entry = hits.entry(key.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        if entry.0 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.1));
            return Err(Error::RateLimited {
                retry_after_seconds: left.as_secs().max(1),
            });
        }
        entry.0 += 1;
        Ok(())
    }
}

/// Mail settings, the queue and the rate limits.
pub struct Mail {
    smtp: Mutex<Option<Smtp>>,
    enabled: bool,
    outbox: Outbox,
    per_address: RateWindow,
    per_client: RateWindow,
    link_ttl: chrono::Duration,
    public_url: String,
}

impl Mail {
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let smtp = Smtp::from_config(config)?;
        let hour = Duration::from_secs(3600);
        Ok(Self {
            enabled: smtp.is_some(),
            smtp: Mutex::new(smtp),
            outbox: Outbox::default(),
            per_address: RateWindow::new(config.mail_requests_per_hour, hour),
            per_client: RateWindow::new(config.mail_requests_per_hour.saturating_mul(10), hour),
            link_ttl: chrono::Duration::seconds(
                i64::try_from(config.mail_link_ttl_seconds).unwrap_or(i64::MAX / 1000),
            ),
            public_url: config.public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Whether SMTP is configured.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn require_enabled(&self) -> Result<()> {
        if self.enabled {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "e-mail is not configured on this instance (smtp_url); ask an admin".into(),
            ))
        }
    }

    pub(crate) fn push(&self, job: Job) {
        if self.enabled {
            self.outbox.push(job);
        }
    }

    fn limit(&self, client: IpAddr, email: &Email) -> Result<()> {
        self.per_client.hit(&client.to_string())?;
        self.per_address.hit(&email.as_str().to_lowercase())
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

fn invalid_link() -> Error {
    Error::Validation(InvalidValue::new(
        "token",
        "this link is invalid, expired or already used",
    ))
}

/// Stores a new token for `user` and returns it (the only time it exists in clear).
async fn issue(
    db: &impl ConnectionTrait,
    user: Uuid,
    purpose: &str,
    ttl: chrono::Duration,
) -> Result<String> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let now = Utc::now();
    mail_tokens::ActiveModel {
        token_hash: Set(hash(&token)),
        user_uuid: Set(user),
        purpose: Set(purpose.to_owned()),
        expires_at: Set(now + ttl),
        used_at: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await?;
    // Expired tokens of this user go; they can never be used.
    mail_tokens::Entity::delete_many()
        .filter(mail_tokens::Column::UserUuid.eq(user))
        .filter(mail_tokens::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    Ok(token)
}

/// Marks the token used if it is valid for `purpose`; the conditional update makes it single-use even
/// when two requests race with it.
async fn consume(db: &impl ConnectionTrait, token: &str, purpose: &str) -> Result<Uuid> {
    let token_hash = hash(token);
    let now = Utc::now();
    let used = mail_tokens::Entity::update_many()
        .col_expr(mail_tokens::Column::UsedAt, Expr::value(now))
        .filter(mail_tokens::Column::TokenHash.eq(token_hash.as_str()))
        .filter(mail_tokens::Column::Purpose.eq(purpose))
        .filter(mail_tokens::Column::UsedAt.is_null())
        .filter(mail_tokens::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    if used.rows_affected != 1 {
        return Err(invalid_link());
    }
    mail_tokens::Entity::find_by_id(token_hash)
        .one(db)
        .await?
        .map(|row| row.user_uuid)
        .ok_or_else(invalid_link)
}

/// Asks for a password-reset link to `email`. Answers the same whether or not an account has it.
pub async fn request_reset(services: &Services, client: IpAddr, email: &str) -> Result<()> {
    let mail = services.mail();
    mail.require_enabled()?;
    let email = Email::parse(email)?;
    mail.limit(client, &email)?;
    mail.push(Job::Reset {
        email: email.as_str().to_owned(),
    });
    Ok(())
}

/// Asks for a new verification link to `email` (the first one expired or got lost).
pub async fn request_verification(services: &Services, client: IpAddr, email: &str) -> Result<()> {
    let mail = services.mail();
    mail.require_enabled()?;
    let email = Email::parse(email)?;
    mail.limit(client, &email)?;
    mail.push(Job::VerifyAgain {
        email: email.as_str().to_owned(),
    });
    Ok(())
}

/// Sets a new password with a reset link's token; every session of the account ends.
pub async fn reset_password(services: &Services, token: &str, new_password: &str) -> Result<()> {
    // A bad password must not use the link up.
    let password = Password::parse(new_password)?;
    let password_hash = services.passwords().hash(&password).await?;
    let txn = crate::db::begin_write(services.db()).await?;
    let user = consume(&txn, token, RESET).await?;
    // Any other reset link of the account dies with this one.
    mail_tokens::Entity::update_many()
        .col_expr(mail_tokens::Column::UsedAt, Expr::value(Utc::now()))
        .filter(mail_tokens::Column::UserUuid.eq(user))
        .filter(mail_tokens::Column::Purpose.eq(RESET))
        .filter(mail_tokens::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    let row = users::Entity::find_by_id(user)
        .one(&txn)
        .await?
        .ok_or_else(invalid_link)?;
    let version = row.token_version.wrapping_add(1);
    let mut active = row.into_active_model();
    active.password_hash = Set(password_hash);
    active.token_version = Set(version);
    active.updated_at = Set(Utc::now());
    active.update(&txn).await?;
    txn.commit().await?;
    services.sessions().invalidate(user);
    tracing::info!(%user, "password reset by mail");
    Ok(())
}

/// Verifies the account a verification link was sent to. A blocked account stays blocked.
pub async fn verify_email(services: &Services, token: &str) -> Result<()> {
    let txn = crate::db::begin_write(services.db()).await?;
    let user = consume(&txn, token, VERIFY).await?;
    users::Entity::update_many()
        .col_expr(users::Column::Status, Expr::value(UserStatus::Verified))
        .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(users::Column::Uuid.eq(user))
        .filter(users::Column::Status.eq(UserStatus::Unverified))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    services.sessions().invalidate(user);
    tracing::info!(%user, "e-mail verified");
    Ok(())
}

/// Whether a new account should verify its address by mail: the admin asked for it and SMTP is set.
pub async fn verification_by_mail(services: &Services) -> Result<bool> {
    Ok(services.mail().enabled() && settings::current(services.db()).await?.email_verification)
}

/// Turns a job into a letter: looks the account up and stores a new token. `None`: nothing to send.
async fn prepare(services: &Services, job: Job) -> Result<Option<Letter>> {
    let db = services.db();
    let mail = services.mail();
    let user = match &job {
        Job::Verify { user } => users::Entity::find_by_id(*user).one(db).await?,
        Job::VerifyAgain { email } | Job::Reset { email } => {
            users::Entity::find()
                .filter(users::Column::Email.eq(email.as_str()))
                .one(db)
                .await?
        }
    };
    let Some(user) = user else {
        return Ok(None);
    };
    let minutes = mail.link_ttl.num_minutes().max(1);
    match job {
        Job::Verify { .. } | Job::VerifyAgain { .. } => {
            if user.status != UserStatus::Unverified || !verification_by_mail(services).await? {
                return Ok(None);
            }
            let token = issue(db, user.uuid, VERIFY, mail.link_ttl).await?;
            Ok(Some(Letter {
                to: user.email,
                subject: "Confirm your e-mail address".into(),
                body: format!(
                    "Hello {login},\n\nconfirm your e-mail address for Pepeunit by opening this link within {minutes} minutes:\n\n{url}/verify?token={token}\n\nIf you did not register, ignore this mail.\n",
                    login = user.login,
                    url = mail.public_url,
                ),
            }))
        }
        Job::Reset { .. } => {
            let token = issue(db, user.uuid, RESET, mail.link_ttl).await?;
            Ok(Some(Letter {
                to: user.email,
                subject: "Reset your password".into(),
                body: format!(
                    "Hello {login},\n\nsomeone asked to reset the password of your Pepeunit account. To choose a new one, open this link within {minutes} minutes (it works once, and ends every session of the account):\n\n{url}/reset?token={token}\n\nIf it was not you, ignore this mail: your password stays as it is.\n",
                    login = user.login,
                    url = mail.public_url,
                ),
            }))
        }
    }
}

/// The mail worker: runs jobs one by one until the queue closes. Without SMTP it returns at once.
pub async fn run(services: Services) {
    let Some(mut jobs) = services.mail().outbox.take_receiver() else {
        return;
    };
    let Some(smtp) = services
        .mail()
        .smtp
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    while let Some(job) = jobs.recv().await {
        match prepare(&services, job).await {
            Ok(Some(letter)) => smtp.send(&letter).await,
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "preparing a mail failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_refuses_past_its_max_per_key() {
        let window = RateWindow::new(2, Duration::from_secs(60));
        window.hit("a").unwrap();
        window.hit("a").unwrap();
        assert!(matches!(window.hit("a"), Err(Error::RateLimited { .. })));
        window.hit("b").unwrap();
    }

    #[test]
    fn tokens_are_stored_hashed() {
        assert_eq!(hash("abc").len(), 64);
        assert_ne!(hash("abc"), "abc");
        assert_eq!(hash(" abc "), hash("abc"));
    }
}
