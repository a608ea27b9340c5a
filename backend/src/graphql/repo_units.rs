//! repo_units in GraphQL.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, TimeZone, Utc};
use pepeunit_protocol::Visibility;
use pepeunit_repositories::{Credentials, RefInfo};

use crate::entities::repo_units as rows;
use crate::error::GqlResult;
use crate::graphql::{actor, parse_uuid, services};
use crate::services::repo_units::{self as service, NewRepoUnit, RepoUnitChange};

/// Which of the four access levels a node has.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "pepeunit_protocol::Visibility")]
pub enum VisibilityLevel {
    Public,
    /// Users of this instance and the instances it peers with.
    Federated,
    Internal,
    Private,
}

/// A mirrored firmware repository.
pub struct RepoUnit(pub(crate) rows::Model);

/// A branch or tag.
#[derive(SimpleObject)]
pub struct GitRef {
    name: String,
    commit: String,
}

impl From<RefInfo> for GitRef {
    fn from(r: RefInfo) -> Self {
        Self {
            name: r.name,
            commit: r.commit,
        }
    }
}

/// A commit, for version pickers.
#[derive(SimpleObject)]
pub struct GitCommit {
    id: String,
    summary: String,
    author: String,
    time: DateTime<Utc>,
}

/// Whether a commit can build units; `problems` name the file and what is wrong.
#[derive(SimpleObject)]
pub struct CommitCheckResult {
    commit: String,
    usable: bool,
    problems: Vec<String>,
    env_example: Option<async_graphql::Json<serde_json::Value>>,
    schema_example: Option<async_graphql::Json<serde_json::Value>>,
}

#[Object]
impl RepoUnit {
    async fn uuid(&self) -> ID {
        ID(self.0.uuid.to_string())
    }
    async fn creator_uuid(&self) -> ID {
        ID(self.0.creator_uuid.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn visibility(&self) -> VisibilityLevel {
        self.0.visibility.into()
    }
    /// Fixed at creation.
    async fn clone_url(&self) -> &str {
        &self.0.clone_url
    }
    /// Credentials themselves are never returned, only whether the repository needs them.
    async fn is_private_repository(&self) -> bool {
        self.0.is_private_repository
    }
    async fn default_branch(&self) -> Option<&str> {
        self.0.default_branch.as_deref()
    }
    async fn sync_period_seconds(&self) -> i32 {
        self.0.sync_period_seconds
    }
    async fn auto_sync(&self) -> bool {
        self.0.auto_sync
    }
    async fn last_synced_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_synced_at
    }
    /// Why the last sync failed; null after a successful one.
    async fn last_sync_error(&self) -> Option<&str> {
        self.0.last_sync_error.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Path of the push webhook (GitHub or GitLab push events), relative to the instance URL.
    async fn webhook_path(&self) -> String {
        format!("/api/v1/repo_units/{}/webhook", self.0.uuid)
    }
    /// The webhook secret; shown to the creator and admins only.
    async fn webhook_secret(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        service::webhook_secret(services(ctx)?, &actor(ctx), &self.0).gql()
    }
    async fn branches(&self, ctx: &Context<'_>) -> Result<Vec<GitRef>> {
        let refs = service::branches(services(ctx)?, &actor(ctx), self.0.uuid)
            .await
            .gql()?;
        Ok(refs.into_iter().map(GitRef::from).collect())
    }
    async fn tags(&self, ctx: &Context<'_>) -> Result<Vec<GitRef>> {
        let refs = service::tags(services(ctx)?, &actor(ctx), self.0.uuid)
            .await
            .gql()?;
        Ok(refs.into_iter().map(GitRef::from).collect())
    }
    /// Commits reachable from a branch, tag or commit (default: the default branch), newest first.
    #[graphql(complexity = "super::list_cost(limit as u64, child_complexity, 1)")]
    async fn commits(
        &self,
        ctx: &Context<'_>,
        revision: Option<String>,
        #[graphql(default = 50)] limit: usize,
    ) -> Result<Vec<GitCommit>> {
        let revision = revision
            .or_else(|| self.0.default_branch.clone())
            .unwrap_or_else(|| "HEAD".into());
        let commits = service::commits(services(ctx)?, &actor(ctx), self.0.uuid, revision, limit)
            .await
            .gql()?;
        Ok(commits
            .into_iter()
            .map(|c| GitCommit {
                id: c.id,
                summary: c.summary,
                author: c.author,
                time: Utc.timestamp_opt(c.time, 0).single().unwrap_or_default(),
            })
            .collect())
    }
    /// Checks `env_example.json` and `schema_example.json` at a revision (default: the default branch).
    async fn check_commit(
        &self,
        ctx: &Context<'_>,
        revision: Option<String>,
    ) -> Result<CommitCheckResult> {
        let revision = revision
            .or_else(|| self.0.default_branch.clone())
            .unwrap_or_else(|| "HEAD".into());
        let check = service::check(services(ctx)?, &actor(ctx), self.0.uuid, revision)
            .await
            .gql()?;
        let json = |v: Option<serde_json::Value>| v.map(async_graphql::Json);
        Ok(CommitCheckResult {
            usable: check.usable(),
            env_example: json(
                check
                    .env_example
                    .as_ref()
                    .and_then(|e| serde_json::to_value(e).ok()),
            ),
            schema_example: json(
                check
                    .schema_example
                    .as_ref()
                    .and_then(|s| serde_json::to_value(s).ok()),
            ),
            commit: check.commit,
            problems: check.problems,
        })
    }
}

#[derive(InputObject)]
pub struct CredentialsInput {
    username: String,
    /// A password or an access token.
    password: String,
}

impl From<CredentialsInput> for Credentials {
    fn from(input: CredentialsInput) -> Self {
        Credentials {
            username: input.username,
            password: input.password,
        }
    }
}

#[derive(InputObject)]
pub struct CreateRepoUnitInput {
    name: String,
    clone_url: String,
    #[graphql(default_with = "VisibilityLevel::Public")]
    visibility: VisibilityLevel,
    #[graphql(default = false)]
    is_private_repository: bool,
    credentials: Option<CredentialsInput>,
    default_branch: Option<String>,
    /// Default: one day.
    sync_period_seconds: Option<i32>,
    /// Default: on.
    auto_sync: Option<bool>,
}

/// Fields left out stay unchanged; the clone URL cannot change.
#[derive(InputObject)]
pub struct UpdateRepoUnitInput {
    name: Option<String>,
    visibility: Option<VisibilityLevel>,
    default_branch: Option<String>,
    sync_period_seconds: Option<i32>,
    auto_sync: Option<bool>,
    credentials: Option<CredentialsInput>,
}

#[derive(Default)]
pub struct RepoUnitQuery;

#[Object]
impl RepoUnitQuery {
    async fn repo_unit(&self, ctx: &Context<'_>, uuid: ID) -> Result<RepoUnit> {
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(RepoUnit(
            service::get(services(ctx)?, &actor(ctx), uuid)
                .await
                .gql()?,
        ))
    }

    /// repo_units you may see, newest first; `creatorUuid` narrows to one creator.
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 1)")]
    async fn repo_units(
        &self,
        ctx: &Context<'_>,
        creator_uuid: Option<ID>,
        #[graphql(default = 0)] offset: u64,
        #[graphql(default = 50)] limit: u64,
    ) -> Result<Vec<RepoUnit>> {
        let creator = creator_uuid.as_ref().map(parse_uuid).transpose().gql()?;
        let rows = service::list(services(ctx)?, &actor(ctx), creator, offset, limit)
            .await
            .gql()?;
        Ok(rows.into_iter().map(RepoUnit).collect())
    }
}

#[derive(Default)]
pub struct RepoUnitMutation;

#[Object]
impl RepoUnitMutation {
    /// Mirrors a repository. Answers once the clone is complete (or refused).
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn create_repo_unit(
        &self,
        ctx: &Context<'_>,
        input: CreateRepoUnitInput,
    ) -> Result<RepoUnit> {
        let form = NewRepoUnit {
            name: input.name,
            clone_url: input.clone_url,
            visibility: Visibility::from(input.visibility),
            is_private_repository: input.is_private_repository,
            credentials: input.credentials.map(Into::into),
            default_branch: input.default_branch,
            sync_period_seconds: input.sync_period_seconds,
            auto_sync: input.auto_sync,
        };
        Ok(RepoUnit(
            service::create(services(ctx)?, &actor(ctx), form)
                .await
                .gql()?,
        ))
    }

    async fn update_repo_unit(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        input: UpdateRepoUnitInput,
    ) -> Result<RepoUnit> {
        let change = RepoUnitChange {
            name: input.name,
            visibility: input.visibility.map(Visibility::from),
            default_branch: input.default_branch,
            sync_period_seconds: input.sync_period_seconds,
            auto_sync: input.auto_sync,
            credentials: input.credentials.map(Into::into),
        };
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(RepoUnit(
            service::update(services(ctx)?, &actor(ctx), uuid, change)
                .await
                .gql()?,
        ))
    }

    /// Deletes a repo_unit and its mirror; `CONFLICT` while units use it.
    async fn delete_repo_unit(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::delete(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }

    /// Fetches the remote now; the result (or the failure) is on the returned node.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn sync_repo_unit(&self, ctx: &Context<'_>, uuid: ID) -> Result<RepoUnit> {
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(RepoUnit(
            service::sync_now(services(ctx)?, &actor(ctx), uuid)
                .await
                .gql()?,
        ))
    }
}
