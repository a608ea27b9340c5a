//! API tokens in GraphQL: made, listed and revoked from a login session only.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use crate::entities::api_tokens;
use crate::error::GqlResult;
use crate::graphql::{actor, credential, parse_uuid, services};
use crate::services::api_tokens::{self as service, Scope};

/// What a token may do.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ApiTokenScope {
    /// Queries and subscriptions only.
    Read,
    /// Mutations too, as its user.
    Write,
}

impl From<ApiTokenScope> for Scope {
    fn from(scope: ApiTokenScope) -> Self {
        match scope {
            ApiTokenScope::Read => Scope::Read,
            ApiTokenScope::Write => Scope::Write,
        }
    }
}

/// An API token as listed: never the token itself.
#[derive(SimpleObject)]
pub struct ApiToken {
    uuid: ID,
    name: String,
    scope: ApiTokenScope,
    /// The token's first characters, to tell tokens apart.
    prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<api_tokens::Model> for ApiToken {
    fn from(row: api_tokens::Model) -> Self {
        Self {
            uuid: ID(row.uuid.to_string()),
            scope: if row.scope == Scope::Write.as_str() {
                ApiTokenScope::Write
            } else {
                ApiTokenScope::Read
            },
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
        }
    }
}

/// A new token: `token` is shown this once and never again.
#[derive(SimpleObject)]
pub struct CreatedApiToken {
    token: String,
    api_token: ApiToken,
}

#[derive(Default)]
pub struct ApiTokenQuery;

#[Object]
impl ApiTokenQuery {
    /// The caller's API tokens (not the tokens themselves).
    async fn api_tokens(&self, ctx: &Context<'_>) -> Result<Vec<ApiToken>> {
        credential(ctx).require_session().gql()?;
        Ok(service::list(services(ctx)?, &actor(ctx))
            .await
            .gql()?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}

#[derive(Default)]
pub struct ApiTokenMutation;

#[Object]
impl ApiTokenMutation {
    /// Makes an API token acting as the caller, for scripts and Grafana (`Authorization: Bearer`). At most
    /// 50 a user; `expiresInDays` 1–3650, or none for a token that lasts until revoked.
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        name: String,
        scope: ApiTokenScope,
        expires_in_days: Option<u32>,
    ) -> Result<CreatedApiToken> {
        credential(ctx).require_session().gql()?;
        let (row, token) = service::create(
            services(ctx)?,
            &actor(ctx),
            &name,
            scope.into(),
            expires_in_days,
        )
        .await
        .gql()?;
        Ok(CreatedApiToken {
            token,
            api_token: row.into(),
        })
    }

    /// Revokes one of the caller's API tokens: it stops working at once.
    async fn revoke_api_token(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        credential(ctx).require_session().gql()?;
        let uuid = parse_uuid(&uuid).gql()?;
        service::revoke(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }
}
