//! The GraphQL open API: thin resolvers over the services, one merged schema.

mod live;
mod repo_units;
mod settings;
mod units;
mod users;

use async_graphql::{MergedObject, Schema};

use async_graphql::{Context, ID};

use crate::config::Config;
use crate::domain::InvalidValue;
use crate::error::Error;
use crate::services::{Actor, Services};

/// Every query.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    users::UserQuery,
    settings::SettingsQuery,
    repo_units::RepoUnitQuery,
    units::UnitQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    users::UserMutation,
    settings::SettingsMutation,
    repo_units::RepoUnitMutation,
    units::UnitMutation,
);

/// The schema type served at `/graphql`.
pub type PepeunitSchema = Schema<QueryRoot, MutationRoot, live::LiveSubscription>;

/// Builds the schema with the configured depth and complexity limits.
pub fn build_schema(config: &Config, services: Services) -> PepeunitSchema {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        live::LiveSubscription,
    )
    .limit_depth(config.graphql_max_depth)
    .limit_complexity(config.graphql_max_complexity)
    .data(units::GraphLoader::new(services.db().clone()))
    .data(services)
    .finish()
}

/// The schema in SDL, as exported to `docs/`.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        live::LiveSubscription,
    )
    .finish()
    .sdl()
}

/// Per-request facts the HTTP layer hands to resolvers.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    pub client_ip: std::net::IpAddr,
}

/// The caller, as the HTTP layer established it.
pub(crate) fn actor(ctx: &Context<'_>) -> Actor {
    ctx.data_opt::<Actor>().copied().unwrap_or(Actor::Anonymous)
}

pub(crate) fn services<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Services> {
    ctx.data::<Services>()
}

/// Parses an `ID` argument as a uuid.
pub(crate) fn parse_uuid(id: &ID) -> Result<uuid::Uuid, Error> {
    id.parse::<uuid::Uuid>().map_err(|_| {
        Error::Validation(InvalidValue {
            field: "uuid",
            message: "is not a valid uuid".into(),
        })
    })
}
