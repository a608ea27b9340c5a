//! Users and authentication in GraphQL.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use pepeunit_protocol::UserId;

use crate::domain::{UserRole, UserStatus};
use crate::entities::users as user_rows;
use crate::error::GqlResult;
use crate::graphql::{RequestInfo, actor, parse_uuid, services};
use crate::services::user_deletion::{self as deletion, DeletionPlan, Named};
use crate::services::users::{self as service, Registration, Session};

/// A user of this instance.
pub struct User {
    row: user_rows::Model,
    /// Set when the row is the caller's own session, whose actor the request did not carry yet.
    is_session_owner: bool,
}

impl User {
    fn new(row: user_rows::Model) -> Self {
        Self {
            row,
            is_session_owner: false,
        }
    }
}

#[Object]
impl User {
    async fn uuid(&self) -> ID {
        ID(self.row.uuid.to_string())
    }
    async fn login(&self) -> &str {
        &self.row.login
    }
    /// Shown to the user themselves and to admins only.
    async fn email(&self, ctx: &Context<'_>) -> Option<&str> {
        let actor = actor(ctx);
        let own =
            self.is_session_owner || actor.user_id().map(|id| id.as_uuid()) == Some(self.row.uuid);
        (own || actor.is_admin()).then_some(self.row.email.as_str())
    }
    async fn role(&self) -> UserRole {
        self.row.role
    }
    async fn status(&self) -> UserStatus {
        self.row.status
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }
    async fn last_login_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_login_at
    }
}

/// A session: the user and a fresh token pair.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>`.
    access_token: String,
    access_expires_at: DateTime<Utc>,
    /// Trade for a new pair with `refreshToken` before it expires.
    refresh_token: String,
    refresh_expires_at: DateTime<Utc>,
    user: User,
}

impl From<Session> for AuthPayload {
    fn from(session: Session) -> Self {
        Self {
            access_token: session.tokens.access_token,
            access_expires_at: session.tokens.access_expires_at,
            refresh_token: session.tokens.refresh_token,
            refresh_expires_at: session.tokens.refresh_expires_at,
            user: User {
                row: session.user,
                is_session_owner: true,
            },
        }
    }
}

#[derive(InputObject)]
pub struct RegisterInput {
    login: String,
    email: String,
    password: String,
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The logged-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let actor = actor(ctx);
        let me = actor.require_user().gql()?;
        Ok(User::new(
            service::get(services(ctx)?, &actor, me.id).await.gql()?,
        ))
    }

    /// One user by uuid; needs a login.
    async fn user(&self, ctx: &Context<'_>, uuid: ID) -> Result<User> {
        Ok(User::new(
            service::get(
                services(ctx)?,
                &actor(ctx),
                UserId::from(parse_uuid(&uuid).gql()?),
            )
            .await
            .gql()?,
        ))
    }

    /// What deleting a user would remove and keep, changing nothing (the user themselves or an admin).
    #[graphql(complexity = "super::list_cost(100, child_complexity, 7)")]
    async fn user_deletion_plan(&self, ctx: &Context<'_>, uuid: ID) -> Result<UserDeletionPlan> {
        let plan = deletion::plan(
            services(ctx)?,
            &actor(ctx),
            UserId::from(parse_uuid(&uuid).gql()?),
        )
        .await
        .gql()?;
        Ok(plan.into())
    }

    /// All users, newest first (admins only). `limit` is capped at 100.
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 1)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] offset: u64,
        #[graphql(default = 50)] limit: u64,
    ) -> Result<Vec<User>> {
        let rows = service::list(services(ctx)?, &actor(ctx), offset, limit)
            .await
            .gql()?;
        Ok(rows.into_iter().map(User::new).collect())
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates an account. While manual verification is on, it cannot log in until an admin verifies it.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> Result<User> {
        let form = Registration {
            login: input.login,
            email: input.email,
            password: input.password,
        };
        Ok(User::new(
            service::register(services(ctx)?, &actor(ctx), form)
                .await
                .gql()?,
        ))
    }

    /// Logs in with a login or an e-mail.
    async fn login(
        &self,
        ctx: &Context<'_>,
        login: String,
        password: String,
    ) -> Result<AuthPayload> {
        let client = ctx.data::<RequestInfo>()?.client_ip;
        Ok(service::login(services(ctx)?, client, &login, &password)
            .await
            .gql()?
            .into())
    }

    /// Trades a refresh token for a new token pair.
    async fn refresh_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<AuthPayload> {
        Ok(service::refresh(services(ctx)?, &refresh_token)
            .await
            .gql()?
            .into())
    }

    /// Changes the caller's password; all other sessions end.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        old_password: String,
        new_password: String,
    ) -> Result<AuthPayload> {
        super::credential(ctx).require_session().gql()?;
        Ok(
            service::change_password(services(ctx)?, &actor(ctx), &old_password, &new_password)
                .await
                .gql()?
                .into(),
        )
    }

    /// Ends every session of the caller.
    async fn logout_everywhere(&self, ctx: &Context<'_>) -> Result<bool> {
        super::credential(ctx).require_session().gql()?;
        service::logout_everywhere(services(ctx)?, &actor(ctx))
            .await
            .gql()?;
        Ok(true)
    }

    /// Sets a user's status: verify, block or unblock (admins only).
    async fn set_user_status(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        status: UserStatus,
    ) -> Result<User> {
        Ok(User::new(
            service::set_status(
                services(ctx)?,
                &actor(ctx),
                UserId::from(parse_uuid(&uuid).gql()?),
                status,
            )
            .await
            .gql()?,
        ))
    }

    /// Sets a user's role (admins only).
    async fn set_user_role(&self, ctx: &Context<'_>, uuid: ID, role: UserRole) -> Result<User> {
        Ok(User::new(
            service::set_role(
                services(ctx)?,
                &actor(ctx),
                UserId::from(parse_uuid(&uuid).gql()?),
                role,
            )
            .await
            .gql()?,
        ))
    }

    /// Deletes a user and everything they own, as `userDeletionPlan` shows it (the user themselves or an
    /// admin). Repo_units other users' units are built from pass to the `ghost` account instead.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn delete_user(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        deletion::delete(
            services(ctx)?,
            &actor(ctx),
            UserId::from(parse_uuid(&uuid).gql()?),
        )
        .await
        .gql()?;
        Ok(true)
    }
}

/// A node named in a deletion plan.
#[derive(SimpleObject)]
pub struct PlannedNode {
    uuid: ID,
    name: String,
}

impl From<Named> for PlannedNode {
    fn from(named: Named) -> Self {
        Self {
            uuid: ID(named.uuid.to_string()),
            name: named.name,
        }
    }
}

/// A repo_unit that stays when its creator is deleted, passing to the `ghost` account, because other
/// users' units are built from it.
#[derive(SimpleObject)]
pub struct KeptRepoUnit {
    uuid: ID,
    name: String,
    units_of_others: u64,
}

/// What deleting a user removes and keeps.
#[derive(SimpleObject)]
pub struct UserDeletionPlan {
    user: User,
    /// The user's units, deleted with their variables, history, logs and links.
    unit_count: u64,
    /// The first 100 of them by name.
    units: Vec<PlannedNode>,
    /// The user's repo_units that are deleted (no one else builds on them).
    repo_unit_count: u64,
    /// The first 100 of them by name.
    repo_units: Vec<PlannedNode>,
    /// The user's repo_units that stay, passing to the `ghost` account.
    kept_repo_units: Vec<KeptRepoUnit>,
    /// Links into or out of the deleted units, removed with them.
    link_count: u64,
    /// Other users' units that lose an input link and are sent `schema_update`.
    affected_unit_count: u64,
}

impl From<DeletionPlan> for UserDeletionPlan {
    fn from(plan: DeletionPlan) -> Self {
        Self {
            user: User::new(plan.user),
            unit_count: plan.unit_count,
            units: plan.units.into_iter().map(Into::into).collect(),
            repo_unit_count: plan.repo_unit_count,
            repo_units: plan.repo_units.into_iter().map(Into::into).collect(),
            kept_repo_units: plan
                .kept_repo_units
                .into_iter()
                .map(|kept| KeptRepoUnit {
                    uuid: ID(kept.repo_unit.uuid.to_string()),
                    name: kept.repo_unit.name,
                    units_of_others: kept.units_of_others,
                })
                .collect(),
            link_count: plan.link_count,
            affected_unit_count: plan.affected_units.len() as u64,
        }
    }
}
