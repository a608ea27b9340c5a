//! The GraphQL open API: thin resolvers over the services, one merged schema.

mod alerts;
mod api_tokens;
mod boards;
mod federation;
mod live;
mod mail;
mod processing;
mod repo_units;
mod series;
mod settings;
mod units;
mod users;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::{Context, ID, MergedObject, Response, Schema, ServerError};

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
    series::SeriesQuery,
    federation::FederationQuery,
    alerts::AlertQuery,
    boards::BoardQuery,
    api_tokens::ApiTokenQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    users::UserMutation,
    settings::SettingsMutation,
    repo_units::RepoUnitMutation,
    units::UnitMutation,
    federation::FederationMutation,
    alerts::AlertMutation,
    boards::BoardMutation,
    api_tokens::ApiTokenMutation,
    mail::MailMutation,
);

/// The schema type served at `/graphql`.
pub type PepeunitSchema = Schema<QueryRoot, MutationRoot, live::LiveSubscription>;

/// What one database query costs in complexity points, on top of one point per field.
const QUERY_COST: usize = 25;
/// What a mutation that hashes a password or talks to a git remote costs: a few fit in one request,
/// hundreds of aliases do not. (`login` stays cheap: its own throttle bounds it, and it must work under
/// any complexity limit.)
pub(crate) const EXPENSIVE_MUTATION: usize = 5000;
/// The most rows any list returns (the services clamp `limit` to it).
const MAX_ROWS: u64 = 1000;

/// The complexity of a list field: each row it may return costs what is asked of the row
/// (`child_complexity`), and each database query it runs (a page and its COUNT are two) costs
/// [`QUERY_COST`]. So 120 aliases of `logs(limit: 1000)` cost what they would make the database do.
pub(crate) fn list_cost(limit: u64, child_complexity: usize, queries: usize) -> usize {
    let rows = limit.clamp(1, MAX_ROWS) as usize;
    rows.saturating_mul(child_complexity)
        .saturating_add(queries.saturating_mul(QUERY_COST))
}

/// Refuses a document holding a mutation when the caller holds a read-only API token, over HTTP and
/// WebSocket alike, before anything runs.
struct ReadOnlyTokens;

impl ExtensionFactory for ReadOnlyTokens {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ReadOnlyTokens)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ReadOnlyTokens {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &async_graphql::Variables,
        next: async_graphql::extensions::NextParseQuery<'_>,
    ) -> async_graphql::ServerResult<async_graphql::parser::types::ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let read_only = ctx
            .data_opt::<crate::services::api_tokens::Credential>()
            .is_some_and(|c| c.read_only());
        let writes = document
            .operations
            .iter()
            .any(|(_, op)| op.node.ty == async_graphql::parser::types::OperationType::Mutation);
        if read_only && writes {
            let mut error = ServerError::new(
                "this API token is read-only: it cannot run a mutation",
                None,
            );
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", "FORBIDDEN");
            return Err(error);
        }
        Ok(document)
    }
}

/// Ends a query or mutation that runs longer than its budget with a `TIMEOUT` error, so one request
/// cannot hold database connections for long; its unfinished database work is dropped with it.
struct TimeBudget(Duration);

impl ExtensionFactory for TimeBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(TimeBudget(self.0))
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for TimeBudget {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        match tokio::time::timeout(self.0, next.run(ctx, operation_name)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(budget = ?self.0, "GraphQL request over its time budget");
                let mut error = ServerError::new(
                    format!(
                        "the request took longer than its {} s budget; ask for less",
                        self.0.as_secs_f64()
                    ),
                    None,
                );
                error
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("code", "TIMEOUT");
                Response::from_errors(vec![error])
            }
        }
    }
}

/// Builds the schema with the configured depth, complexity and time limits.
pub fn build_schema(config: &Config, services: Services) -> PepeunitSchema {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        live::LiveSubscription,
    )
    .limit_depth(config.graphql_max_depth)
    .limit_complexity(config.graphql_max_complexity)
    .data(units::GraphLoader::new(services.db().clone()))
    .extension(ReadOnlyTokens)
    .extension(TimeBudget(Duration::from_millis(
        config.graphql_time_budget_ms,
    )))
    .data(crate::backup::schedule::BackupStatus::new(config))
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

/// How the caller authenticated (a login session unless the HTTP layer said it was an API token).
pub(crate) fn credential(ctx: &Context<'_>) -> crate::services::api_tokens::Credential {
    ctx.data_opt::<crate::services::api_tokens::Credential>()
        .copied()
        .unwrap_or(crate::services::api_tokens::Credential::Session)
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object};

    struct Slow;

    #[Object]
    impl Slow {
        async fn slow(&self) -> bool {
            tokio::time::sleep(Duration::from_secs(30)).await;
            true
        }
    }

    #[tokio::test]
    async fn a_request_over_its_time_budget_ends_with_a_timeout_error() {
        let schema = Schema::build(Slow, EmptyMutation, EmptySubscription)
            .extension(TimeBudget(Duration::from_millis(50)))
            .finish();
        let started = std::time::Instant::now();
        let response = schema.execute("{ slow }").await;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "cut off, not run to its end"
        );
        let error = &response.errors[0];
        assert!(error.message.contains("budget"), "{}", error.message);
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .cloned();
        assert_eq!(code, Some(async_graphql::Value::from("TIMEOUT")));
    }

    #[test]
    fn lists_cost_their_rows_and_queries() {
        assert_eq!(list_cost(1000, 2, 2), 2050);
        assert_eq!(list_cost(10, 3, 1), 55);
        assert_eq!(
            list_cost(u64::MAX, 2, 1),
            2025,
            "the services never return more than 1000"
        );
        assert_eq!(list_cost(0, 2, 1), 27);
    }
}
