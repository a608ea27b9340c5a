//! API tokens for scripts and Grafana: named, scoped (`read` or `write`), optionally expiring, revocable,
//! shown once and stored as a SHA-256 hash.
//!
//! A token acts as its user: it sees exactly what the user may see, and stops working when the user is
//! blocked or deleted. A `read` token cannot run a mutation (the HTTP edge refuses it before it runs), and
//! no token can make, list or revoke tokens or change a password: that needs a login session.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Services;
use super::actor::{Actor, AuthUser};
use crate::domain::{InvalidValue, UserStatus};
use crate::entities::api_tokens;
use crate::error::{Error, Result};

/// What every token starts with, so a leaked one is recognisable (and secret scanners can match it).
pub const PREFIX: &str = "pepeunit_";
/// Most tokens one user may hold.
pub const PER_USER: u64 = 50;
/// Longest expiry a token may be given.
const MAX_DAYS: u32 = 3650;
/// `last_used_at` is written at most this often per token: using a token is a read, not a write.
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "write" {
            Scope::Write
        } else {
            Scope::Read
        }
    }
}

/// How a request authenticated: with a login session, or with an API token of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session,
    Token(Scope),
}

impl Credential {
    /// Refuses a token where only a login session will do.
    pub fn require_session(self) -> Result<()> {
        match self {
            Credential::Session => Ok(()),
            Credential::Token(_) => Err(Error::Forbidden(
                "an API token cannot do this; log in instead".into(),
            )),
        }
    }

    pub fn read_only(self) -> bool {
        self == Credential::Token(Scope::Read)
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.into(),
    })
}

/// Makes a token for the caller: the stored row and the token itself, which is never shown again.
pub async fn create(
    services: &Services,
    actor: &Actor,
    name: &str,
    scope: Scope,
    expires_in_days: Option<u32>,
) -> Result<(api_tokens::Model, String)> {
    let user = actor.require_user()?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(invalid("name", "a name of 1 to 100 characters"));
    }
    if expires_in_days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
        return Err(invalid(
            "expiresInDays",
            format!("between 1 and {MAX_DAYS} days, or none for a token that does not expire"),
        ));
    }
    let held = api_tokens::Entity::find()
        .filter(api_tokens::Column::UserUuid.eq(Uuid::from(user.id)))
        .count(services.db())
        .await?;
    if held >= PER_USER {
        return Err(Error::Conflict(format!(
            "a user may hold at most {PER_USER} API tokens; revoke one first"
        )));
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let now = Utc::now();
    let row = api_tokens::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        user_uuid: Set(user.id.into()),
        name: Set(name.to_owned()),
        scope: Set(scope.as_str().to_owned()),
        token_hash: Set(hash(&token)),
        prefix: Set(token.chars().take(PREFIX.len() + 4).collect()),
        created_at: Set(now),
        last_used_at: Set(None),
        expires_at: Set(expires_in_days.map(|d| now + Duration::days(i64::from(d)))),
    }
    .insert(services.db())
    .await?;
    Ok((row, token))
}

/// The caller's tokens, newest first.
pub async fn list(services: &Services, actor: &Actor) -> Result<Vec<api_tokens::Model>> {
    let user = actor.require_user()?;
    Ok(api_tokens::Entity::find()
        .filter(api_tokens::Column::UserUuid.eq(Uuid::from(user.id)))
        .order_by_desc(api_tokens::Column::CreatedAt)
        .all(services.db())
        .await?)
}

/// Revokes one of the caller's tokens: it stops working at once.
pub async fn revoke(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let user = actor.require_user()?;
    let deleted = api_tokens::Entity::delete_many()
        .filter(api_tokens::Column::Uuid.eq(uuid))
        .filter(api_tokens::Column::UserUuid.eq(Uuid::from(user.id)))
        .exec(services.db())
        .await?;
    if deleted.rows_affected == 0 {
        return Err(Error::NotFound("API token"));
    }
    Ok(())
}

/// The user a token acts as, and its scope; `None` when `token` is not an API token at all.
pub async fn authenticate(services: &Services, token: &str) -> Result<Option<(Actor, Scope)>> {
    if !token.starts_with(PREFIX) {
        return Ok(None);
    }
    let row = api_tokens::Entity::find()
        .filter(api_tokens::Column::TokenHash.eq(hash(token)))
        .one(services.db())
        .await?
        .ok_or(Error::InvalidToken)?;
    let now = Utc::now();
    if row.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::InvalidToken);
    }
    let user = super::users::current(services, row.user_uuid)
        .await?
        .ok_or(Error::InvalidToken)?;
    if user.status != UserStatus::Verified {
        return Err(Error::InvalidToken);
    }
    touch(services, &row, now).await;
    Ok(Some((
        Actor::User(AuthUser {
            id: row.user_uuid.into(),
            role: user.role,
        }),
        Scope::parse(&row.scope),
    )))
}

/// Records when a token was last used, at most once per [`TOUCH_EVERY`]; a failure only loses that date.
async fn touch(services: &Services, row: &api_tokens::Model, now: DateTime<Utc>) {
    if row.last_used_at.is_some_and(|at| now - at < TOUCH_EVERY) {
        return;
    }
    let updated = api_tokens::Entity::update_many()
        .col_expr(
            api_tokens::Column::LastUsedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(api_tokens::Column::Uuid.eq(row.uuid))
        .exec(services.db())
        .await;
    if let Err(error) = updated {
        tracing::debug!(%error, "recording an API token's use failed");
    }
}

/// The caller of a bearer token: an API token, or else a login session's access token.
pub async fn authenticate_bearer(services: &Services, token: &str) -> Result<(Actor, Credential)> {
    if let Some((actor, scope)) = authenticate(services, token).await? {
        return Ok((actor, Credential::Token(scope)));
    }
    Ok((
        super::users::authenticate(services, token).await?,
        Credential::Session,
    ))
}
