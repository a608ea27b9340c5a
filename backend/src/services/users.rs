//! Accounts: registration, login, token refresh, password change, and admin moderation.

use std::net::IpAddr;

use chrono::Utc;
use pepeunit_protocol::UserId;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use crate::domain::{Email, Login, Password, UserRole, UserStatus};
use crate::entities::users;
use crate::error::{Error, Result};
use crate::services::tokens::{TokenKind, TokenPair};
use crate::services::{Actor, AuthUser, Services, settings};

/// What a registration form sends, unparsed.
#[derive(Debug, Clone)]
pub struct Registration {
    pub login: String,
    pub email: String,
    pub password: String,
}

/// A logged-in session: the user and their tokens.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: users::Model,
    pub tokens: TokenPair,
}

/// Creates an account. Refused while registration is closed, except for admins creating users.
pub async fn register(
    services: &Services,
    actor: &Actor,
    form: Registration,
) -> Result<users::Model> {
    let settings = settings::current(services.db()).await?;
    if !settings.registration_open && !actor.is_admin() {
        return Err(Error::Forbidden(
            "registration is closed on this instance".into(),
        ));
    }
    // With verification by e-mail the mailed link verifies the account; an admin still may by hand.
    let by_mail = settings.email_verification && services.mail().enabled();
    let status = if (settings.manual_verification || by_mail) && !actor.is_admin() {
        UserStatus::Unverified
    } else {
        UserStatus::Verified
    };
    let user = create(services, form, UserRole::User, status).await?;
    if by_mail && status == UserStatus::Unverified {
        services
            .mail()
            .push(crate::services::mail::outbox::Job::Verify { user: user.uuid });
    }
    Ok(user)
}

/// Creates an account with a given role; the CLI uses it for the first admin.
pub async fn create(
    services: &Services,
    form: Registration,
    role: UserRole,
    status: UserStatus,
) -> Result<users::Model> {
    let login = Login::parse(&form.login)?;
    let email = Email::parse(&form.email)?;
    let password = Password::parse(&form.password)?;
    let db = services.db();
    if users::Entity::find()
        .filter(users::Column::Login.eq(login.as_str()))
        .one(db)
        .await?
        .is_some()
    {
        return Err(Error::Conflict("this login is already taken".into()));
    }
    if users::Entity::find()
        .filter(users::Column::Email.eq(email.as_str()))
        .one(db)
        .await?
        .is_some()
    {
        return Err(Error::Conflict("this e-mail is already registered".into()));
    }
    let password_hash = services.passwords().hash(&password).await?;
    let now = Utc::now();
    let user = users::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        login: Set(login.as_str().to_owned()),
        email: Set(email.as_str().to_owned()),
        password_hash: Set(password_hash),
        role: Set(role),
        status: Set(status),
        token_version: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        last_login_at: Set(None),
    };
    // Two registrations racing for one name both pass the checks above; the unique index decides.
    user.insert(db)
        .await
        .map_err(|e| Error::on_unique(e, "this login or e-mail is already taken"))
}

async fn find_by_login_or_email(
    services: &Services,
    login_or_email: &str,
) -> Result<Option<users::Model>> {
    let key = login_or_email.trim();
    let query = if key.contains('@') {
        match Email::parse(key) {
            Ok(email) => users::Entity::find().filter(users::Column::Email.eq(email.as_str())),
            Err(_) => return Ok(None),
        }
    } else {
        match Login::parse(key) {
            Ok(login) => users::Entity::find().filter(users::Column::Login.eq(login.as_str())),
            Err(_) => return Ok(None),
        }
    };
    Ok(query.one(services.db()).await?)
}

fn ensure_active(user: &users::Model) -> Result<()> {
    match user.status {
        UserStatus::Verified => Ok(()),
        UserStatus::Unverified => Err(Error::Forbidden(
            "this account awaits verification by an admin".into(),
        )),
        UserStatus::Blocked => Err(Error::Forbidden("this account is blocked".into())),
    }
}

/// Logs in by login or e-mail. Wrong login and wrong password give the same error after the same work.
pub async fn login(
    services: &Services,
    client: IpAddr,
    login_or_email: &str,
    password: &str,
) -> Result<Session> {
    services.throttle().check(client)?;
    let user = find_by_login_or_email(services, login_or_email).await?;
    let matched = services
        .passwords()
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    let user = match (user, matched) {
        (Some(user), true) => user,
        _ => {
            services.throttle().record_failure(client);
            tracing::info!(%client, "failed login");
            return Err(Error::InvalidCredentials);
        }
    };
    ensure_active(&user)?;
    let tokens = services
        .tokens()
        .issue_pair(user.uuid, user.token_version)?;
    let mut active = user.into_active_model();
    active.last_login_at = Set(Some(Utc::now()));
    let user = active.update(services.db()).await?;
    Ok(Session { user, tokens })
}

/// Trades a valid refresh token for a new pair.
pub async fn refresh(services: &Services, refresh_token: &str) -> Result<Session> {
    let claims = services
        .tokens()
        .verify(refresh_token, TokenKind::Refresh)?;
    let user = load_current(services, claims.sub, claims.ver).await?;
    let tokens = services
        .tokens()
        .issue_pair(user.uuid, user.token_version)?;
    Ok(Session { user, tokens })
}

async fn load_current(services: &Services, uuid: Uuid, version: i32) -> Result<users::Model> {
    let user = users::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::InvalidToken)?;
    if user.token_version != version || user.status != UserStatus::Verified {
        return Err(Error::InvalidToken);
    }
    Ok(user)
}

/// A user's role, status and token version, from the session cache or the database; `None` if the user
/// is gone. Every token check goes through here, so a change of status reaches them all at once.
pub(crate) async fn current(
    services: &Services,
    user: Uuid,
) -> Result<Option<crate::services::session_cache::CachedUser>> {
    if let Some(cached) = services.sessions().get(user) {
        return Ok(Some(cached));
    }
    Ok(users::Entity::find_by_id(user)
        .one(services.db())
        .await?
        .map(|u| {
            services
                .sessions()
                .put(u.uuid, u.role, u.status, u.token_version)
        }))
}

/// Resolves an access token to the user it was issued to, if it is still valid and not revoked.
pub async fn authenticate(services: &Services, access_token: &str) -> Result<Actor> {
    let claims = services.tokens().verify(access_token, TokenKind::Access)?;
    let cached = current(services, claims.sub)
        .await?
        .ok_or(Error::InvalidToken)?;
    if cached.token_version != claims.ver || cached.status != UserStatus::Verified {
        return Err(Error::InvalidToken);
    }
    Ok(Actor::User(AuthUser {
        id: claims.sub.into(),
        role: cached.role,
    }))
}

/// Changes the caller's password; every earlier token dies, a new pair is returned.
pub async fn change_password(
    services: &Services,
    actor: &Actor,
    old_password: &str,
    new_password: &str,
) -> Result<Session> {
    let me = actor.require_user()?;
    let user = get_model(services, me.id).await?;
    if !services
        .passwords()
        .verify(old_password, Some(&user.password_hash))
        .await?
    {
        return Err(Error::InvalidCredentials);
    }
    let new_password = Password::parse(new_password)?;
    let hash = services.passwords().hash(&new_password).await?;
    let mut active = user.into_active_model();
    active.password_hash = Set(hash);
    let user = bump_token_version(services, active).await?;
    let tokens = services
        .tokens()
        .issue_pair(user.uuid, user.token_version)?;
    Ok(Session { user, tokens })
}

/// Revokes every token of the caller (log out everywhere).
pub async fn logout_everywhere(services: &Services, actor: &Actor) -> Result<()> {
    let me = actor.require_user()?;
    let user = get_model(services, me.id).await?;
    bump_token_version(services, user.into_active_model()).await?;
    Ok(())
}

async fn bump_token_version(
    services: &Services,
    mut active: users::ActiveModel,
) -> Result<users::Model> {
    let version = active.token_version.take().unwrap_or(0);
    active.token_version = Set(version.wrapping_add(1));
    active.updated_at = Set(Utc::now());
    let user = active.update(services.db()).await?;
    services.sessions().invalidate(user.uuid);
    Ok(user)
}

async fn get_model(services: &Services, id: UserId) -> Result<users::Model> {
    users::Entity::find_by_id(id.as_uuid())
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("user"))
}

/// One user; any logged-in user may look another up (e-mail is hidden at the GraphQL edge).
pub async fn get(services: &Services, actor: &Actor, id: UserId) -> Result<users::Model> {
    actor.require_user()?;
    get_model(services, id).await
}

/// Users, newest first; admins only.
pub async fn list(
    services: &Services,
    actor: &Actor,
    offset: u64,
    limit: u64,
) -> Result<Vec<users::Model>> {
    actor.require_admin()?;
    Ok(users::Entity::find()
        .order_by_desc(users::Column::CreatedAt)
        .offset(offset)
        .limit(Ord::min(limit, 100))
        .all(services.db())
        .await?)
}

/// Refuses a change that would leave the instance without a verified admin.
pub(crate) async fn ensure_not_last_admin(
    db: &impl ConnectionTrait,
    user: &users::Model,
) -> Result<()> {
    if user.role != UserRole::Admin || user.status != UserStatus::Verified {
        return Ok(());
    }
    let admins = users::Entity::find()
        .filter(users::Column::Role.eq(UserRole::Admin))
        .filter(users::Column::Status.eq(UserStatus::Verified))
        .count(db)
        .await?;
    if admins <= 1 {
        return Err(Error::Conflict(
            "the instance must keep at least one active admin".into(),
        ));
    }
    Ok(())
}

/// Sets an account's status (verify, block, unblock); admins only. Any status but `Verified` (blocked, or
/// back to unverified) revokes every token and disconnects the account's units, and may not take away the
/// instance's last active admin.
pub async fn set_status(
    services: &Services,
    actor: &Actor,
    id: UserId,
    status: UserStatus,
) -> Result<users::Model> {
    let admin = actor.require_admin()?;
    let user = get_model(services, id).await?;
    if status == UserStatus::Blocked && admin.id == id {
        return Err(Error::Conflict("an admin cannot block themselves".into()));
    }
    if status != UserStatus::Verified && user.status == UserStatus::Verified {
        ensure_not_last_admin(services.db(), &user).await?;
    }
    let mut active = user.into_active_model();
    active.status = Set(status);
    if status == UserStatus::Verified {
        active.updated_at = Set(Utc::now());
        let user = active.update(services.db()).await?;
        services.sessions().invalidate(user.uuid);
        return Ok(user);
    }
    // A user who may not log in loses their tokens and takes their devices offline with them.
    let revoked = bump_token_version(services, active).await?;
    disconnect_units(services, revoked.uuid).await?;
    Ok(revoked)
}

/// A creator who is no longer verified takes their devices offline with them (units of a creator who is not
/// verified cannot connect, so their open sessions are closed too).
async fn disconnect_units(services: &Services, creator: uuid::Uuid) -> Result<()> {
    let owned: Vec<uuid::Uuid> = crate::entities::units::Entity::find()
        .select_only()
        .column(crate::entities::units::Column::Uuid)
        .filter(crate::entities::units::Column::CreatorUuid.eq(creator))
        .into_tuple()
        .all(services.db())
        .await?;
    for unit in owned {
        services
            .unit_events()
            .send(crate::services::units::events::UnitEvent::Revoked(unit));
    }
    Ok(())
}

/// Changes an account's role; admins only.
pub async fn set_role(
    services: &Services,
    actor: &Actor,
    id: UserId,
    role: UserRole,
) -> Result<users::Model> {
    actor.require_admin()?;
    let user = get_model(services, id).await?;
    if role != UserRole::Admin {
        ensure_not_last_admin(services.db(), &user).await?;
    }
    let mut active = user.into_active_model();
    active.role = Set(role);
    active.updated_at = Set(Utc::now());
    let user = active.update(services.db()).await?;
    services.sessions().invalidate(user.uuid);
    Ok(user)
}
