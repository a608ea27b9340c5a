//! The GraphQL open API: thin resolvers over the services, one merged schema.

mod settings;
mod users;

use async_graphql::{EmptySubscription, MergedObject, Schema};

use crate::config::Config;
use crate::services::Services;

/// Every query.
#[derive(MergedObject, Default)]
pub struct QueryRoot(users::UserQuery, settings::SettingsQuery);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct MutationRoot(users::UserMutation, settings::SettingsMutation);

/// The schema type served at `/graphql`.
pub type PepeunitSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema with the configured depth and complexity limits.
pub fn build_schema(config: &Config, services: Services) -> PepeunitSchema {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .limit_depth(config.graphql_max_depth)
    .limit_complexity(config.graphql_max_complexity)
    .data(services)
    .finish()
}

/// The schema in SDL, as exported to `docs/`.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .finish()
    .sdl()
}

/// Per-request facts the HTTP layer hands to resolvers.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo {
    pub client_ip: std::net::IpAddr,
}
