//! Units, their variable nodes and links in GraphQL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, Json, Object, Result, SimpleObject,
};
use chrono::{DateTime, Utc};
use pepeunit_protocol::Visibility;
use sea_orm::DatabaseConnection;
use serde_json::{Map, Value};

use crate::entities::{unit_logs, unit_node_edges, unit_node_values, unit_nodes, units};
use crate::error::{Error, GqlResult};
use crate::graphql::processing::{
    Aggregate, Rejection, UnitNodeProcessing, UnitNodeProcessingInput,
};
use crate::graphql::repo_units::{RepoUnit, VisibilityLevel};
use crate::graphql::{actor, parse_uuid, services};
use crate::services::units::events::UnitCommand;
use crate::services::units::nodes::{HistoryPolicy, NodeKind};
use crate::services::units::processing::Processing;
use crate::services::units::{
    self as service, NewUnit, UnitChange, UnitFilter, UnitTarget, aggregates, bundle, data, device,
    env, grafana, links, nodes, rollouts, schema_json,
};

/// Longest `search` text: names are short, and an unbounded pattern costs the database.
const MAX_SEARCH_CHARS: usize = 200;

/// A device built from a repo_unit.
pub struct Unit(units::Model, Option<Vec<UnitNode>>);

impl Unit {
    fn new(row: units::Model) -> Self {
        Self(row, None)
    }
}

/// Which archive a bundle comes as.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum BundleFormat {
    Zip,
    Tar,
    /// gzip-compressed tar (`.tar.gz`).
    TarGz,
}

/// One log line a unit published.
#[derive(SimpleObject)]
pub struct UnitLog {
    level: String,
    text: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<unit_logs::Model> for UnitLog {
    fn from(row: unit_logs::Model) -> Self {
        Self {
            level: row.level,
            text: row.text,
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

/// A page of log lines.
#[derive(SimpleObject)]
pub struct UnitLogPage {
    total: u64,
    items: Vec<UnitLog>,
}

fn object(map: Map<String, Value>) -> Json<Value> {
    Json(Value::Object(map))
}

#[Object]
impl Unit {
    async fn uuid(&self) -> ID {
        ID(self.0.uuid.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn visibility(&self) -> VisibilityLevel {
        self.0.visibility.into()
    }
    async fn creator_uuid(&self) -> ID {
        ID(self.0.creator_uuid.to_string())
    }
    async fn repo_unit_uuid(&self) -> ID {
        ID(self.0.repo_unit_uuid.to_string())
    }
    /// The repo_unit, if you may see it.
    async fn repo_unit(&self, ctx: &Context<'_>) -> Result<Option<RepoUnit>> {
        let found =
            crate::services::repo_units::get(services(ctx)?, &actor(ctx), self.0.repo_unit_uuid)
                .await;
        match found {
            Ok(row) => Ok(Some(RepoUnit(row))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e).gql(),
        }
    }
    /// Whether the unit follows the repo_unit's default branch (and updates as it moves).
    async fn follows_default_branch(&self) -> bool {
        self.0.follows_default_branch
    }
    async fn branch(&self) -> Option<&str> {
        self.0.repo_branch.as_deref()
    }
    /// The pinned commit, when pinned to a commit.
    async fn commit(&self) -> Option<&str> {
        self.0.repo_commit.as_deref()
    }
    /// The pinned tag, when pinned to a tag.
    async fn tag(&self) -> Option<&str> {
        self.0.repo_tag.as_deref()
    }
    /// The commit the unit should run (its env.json's `PU_COMMIT_VERSION`).
    async fn target_commit(&self) -> Option<&str> {
        self.0.target_commit.as_deref()
    }
    /// The commit the unit last reported running.
    async fn reported_commit(&self) -> Option<&str> {
        self.0.reported_commit.as_deref()
    }
    /// Whether the unit is connected to the broker now.
    async fn online(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(services(ctx)?.live().is_online(self.0.uuid))
    }
    /// The update audit log, newest first; the creator and admins.
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 1)")]
    async fn update_attempts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: u64,
    ) -> Result<Vec<UpdateAttempt>> {
        let rows = rollouts::attempts(services(ctx)?, &actor(ctx), self.0.uuid, limit)
            .await
            .gql()?;
        Ok(rows.into_iter().map(UpdateAttempt::from).collect())
    }
    /// `pending` after the target moved, `done` once the unit reports running it, `failed` when a rollout
    /// wave timed out waiting for it.
    async fn update_status(&self) -> Option<&str> {
        self.0.update_status.as_deref()
    }
    async fn update_status_at(&self) -> Option<DateTime<Utc>> {
        self.0.update_status_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Input and output variables.
    async fn nodes(&self, ctx: &Context<'_>) -> Result<Vec<UnitNode>> {
        if let Some(nodes) = &self.1 {
            return Ok(nodes.clone());
        }
        let loader = ctx.data::<DataLoader<GraphLoader>>()?;
        let rows = loader
            .load_one(NodesOf(self.0.uuid))
            .await
            .map_err(|e| e.extend())?
            .unwrap_or_default();
        with_links(ctx, loader, rows).await
    }
    /// A Grafana dashboard with a panel per output, read through the Infinity data source (its variable
    /// `$datasource`; `docs/src/data.md`): import it in Grafana under Dashboards → New → Import.
    async fn grafana_dashboard(&self, ctx: &Context<'_>) -> Result<Json<Value>> {
        let loader = ctx.data::<DataLoader<GraphLoader>>()?;
        let rows = match &self.1 {
            Some(nodes) => nodes.iter().map(|n| n.0.clone()).collect(),
            None => loader
                .load_one(NodesOf(self.0.uuid))
                .await
                .map_err(|e| e.extend())?
                .unwrap_or_default(),
        };
        Ok(Json(grafana::dashboard(&self.0, &rows)))
    }
    /// The last `state/pepeunit` payload; the creator and admins only.
    async fn state(&self, ctx: &Context<'_>) -> Option<Json<Value>> {
        if !data::may_read_private_data(&actor(ctx), &self.0) {
            return None;
        }
        let state = self.0.last_state.as_deref()?;
        serde_json::from_str(state).ok().map(Json)
    }
    async fn state_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_state_at
    }
    /// Unexpired log lines, newest first; the creator and admins only.
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 2)")]
    async fn logs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] limit: u64,
        #[graphql(default = 0)] offset: u64,
    ) -> Result<UnitLogPage> {
        let (rows, total) = data::logs(services(ctx)?, &actor(ctx), self.0.uuid, limit, offset)
            .await
            .gql()?;
        Ok(UnitLogPage {
            total,
            items: rows.into_iter().map(UnitLog::from).collect(),
        })
    }
    /// What the unit keeps in its state storage; the creator only.
    async fn state_storage(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let caller = device::DeviceCaller::User(actor(ctx));
        match device::state_storage(services(ctx)?, &caller, self.0.uuid).await {
            Ok(stored) => Ok(Some(stored)),
            Err(Error::Forbidden(_)) => Ok(None),
            Err(e) => Err(e).gql(),
        }
    }
    /// env.json; the creator only (it holds the unit's token and keys).
    async fn env(&self, ctx: &Context<'_>) -> Result<Json<Value>> {
        Ok(object(
            env::read(services(ctx)?, &actor(ctx), self.0.uuid)
                .await
                .gql()?,
        ))
    }
    /// schema.json as the unit downloads it.
    async fn schema(&self, ctx: &Context<'_>) -> Result<Json<Value>> {
        let caller = device::DeviceCaller::User(actor(ctx));
        Ok(object(
            device::schema(services(ctx)?, &caller, self.0.uuid)
                .await
                .gql()?,
        ))
    }
    /// A download link for the bundle, valid for five minutes; the creator only.
    async fn bundle_url(&self, ctx: &Context<'_>, format: BundleFormat) -> Result<String> {
        let kind = match format {
            BundleFormat::Zip => "zip",
            BundleFormat::Tar => "tar",
            BundleFormat::TarGz => "tgz",
        };
        bundle::download_link(services(ctx)?, &actor(ctx), self.0.uuid, kind)
            .await
            .gql()
    }
}

/// An input or output variable of a unit.
#[derive(Clone)]
pub struct UnitNode(unit_nodes::Model, Option<Vec<unit_node_edges::Model>>);

impl UnitNode {
    fn new(row: unit_nodes::Model) -> Self {
        Self(row, None)
    }
}

/// Whether a node takes values in or sends them out.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum UnitNodeKind {
    Input,
    Output,
}

/// How much history a node keeps.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    LastValue,
    LastN,
    Window,
}

/// One stored value.
#[derive(SimpleObject)]
pub struct UnitNodeValue {
    value: String,
    created_at: DateTime<Utc>,
}

impl From<unit_node_values::Model> for UnitNodeValue {
    fn from(row: unit_node_values::Model) -> Self {
        Self {
            value: row.value,
            created_at: row.created_at,
        }
    }
}

/// A link from an output to an input.
#[derive(SimpleObject)]
pub struct UnitNodeEdge {
    uuid: ID,
    output_uuid: ID,
    input_uuid: ID,
    creator_uuid: ID,
    created_at: DateTime<Utc>,
}

impl From<unit_node_edges::Model> for UnitNodeEdge {
    fn from(row: unit_node_edges::Model) -> Self {
        Self {
            uuid: ID(row.uuid.to_string()),
            output_uuid: ID(row.output_node_uuid.to_string()),
            input_uuid: ID(row.input_node_uuid.to_string()),
            creator_uuid: ID(row.creator_uuid.to_string()),
            created_at: row.created_at,
        }
    }
}

#[Object]
impl UnitNode {
    async fn uuid(&self) -> ID {
        ID(self.0.uuid.to_string())
    }
    async fn unit_uuid(&self) -> ID {
        ID(self.0.unit_uuid.to_string())
    }
    async fn kind(&self) -> UnitNodeKind {
        match NodeKind::of(&self.0) {
            NodeKind::Input => UnitNodeKind::Input,
            NodeKind::Output => UnitNodeKind::Output,
        }
    }
    /// The name in the schema, e.g. `temperature/pepeunit`.
    async fn topic_name(&self) -> &str {
        &self.0.topic_name
    }
    /// The full MQTT topic.
    async fn topic(&self, ctx: &Context<'_>) -> Result<String> {
        let domain = &services(ctx)?.units().endpoint.domain;
        Ok(schema_json::node_topic(
            domain,
            self.0.uuid,
            &self.0.topic_name,
        ))
    }
    async fn visibility(&self) -> VisibilityLevel {
        self.0.visibility.into()
    }
    /// Whether users other than the creator may write to this input.
    async fn is_rewritable_input(&self) -> bool {
        self.0.is_rewritable_input
    }
    async fn history_kind(&self) -> HistoryKind {
        match HistoryPolicy::of(&self.0) {
            HistoryPolicy::LastValue => HistoryKind::LastValue,
            HistoryPolicy::LastN(_) => HistoryKind::LastN,
            HistoryPolicy::Window(_) => HistoryKind::Window,
        }
    }
    async fn history_limit(&self) -> Option<i32> {
        self.0.history_limit
    }
    async fn history_window_seconds(&self) -> Option<i32> {
        self.0.history_window_seconds
    }
    async fn last_value(&self) -> Option<&str> {
        self.0.last_value.as_deref()
    }
    async fn last_value_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_value_at
    }
    /// Stored values, newest first (empty when the node keeps only its last value).
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 1)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] limit: u64,
    ) -> Result<Vec<UnitNodeValue>> {
        let rows = data::history(services(ctx)?, &actor(ctx), self.0.uuid, limit)
            .await
            .gql()?;
        Ok(rows.into_iter().map(UnitNodeValue::from).collect())
    }
    /// An output's processing: its filters and aggregate windows (none set: every value kept, nothing
    /// aggregated).
    async fn processing(&self) -> UnitNodeProcessing {
        Processing::of(&self.0).unwrap_or_default().into()
    }
    /// How many of its samples each processing filter turned away (not stored, not routed) or
    /// aggregation left out.
    async fn rejections(&self, ctx: &Context<'_>) -> Result<Vec<Rejection>> {
        let counts = aggregates::rejections(services(ctx)?, &actor(ctx), self.0.uuid)
            .await
            .gql()?;
        Ok(counts
            .into_iter()
            .map(|(reason, count)| Rejection::new(reason, count))
            .collect())
    }
    /// The newest windows of one of its aggregate series (`windowSeconds` long), optionally those that
    /// start in `[from, to)`, newest first.
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 1)")]
    async fn aggregates(
        &self,
        ctx: &Context<'_>,
        window_seconds: u32,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default = 100)] limit: u64,
    ) -> Result<Vec<Aggregate>> {
        let rows = aggregates::latest(
            services(ctx)?,
            &actor(ctx),
            self.0.uuid,
            window_seconds,
            (from, to),
            limit,
        )
        .await
        .gql()?;
        Ok(rows.into_iter().map(Aggregate::from).collect())
    }
    /// Links into (for an input) or out of (for an output) this node.
    async fn links(&self, ctx: &Context<'_>) -> Result<Vec<UnitNodeEdge>> {
        let rows = match &self.1 {
            Some(rows) => rows.clone(),
            None => ctx
                .data::<DataLoader<GraphLoader>>()?
                .load_one(LinksOf(self.0.uuid))
                .await
                .map_err(|e| e.extend())?
                .unwrap_or_default(),
        };
        Ok(rows.into_iter().map(UnitNodeEdge::from).collect())
    }
}

/// `rows` as GraphQL nodes, with their links loaded in one go when the query asks for them.
async fn with_links(
    ctx: &Context<'_>,
    loader: &DataLoader<GraphLoader>,
    rows: Vec<unit_nodes::Model>,
) -> Result<Vec<UnitNode>> {
    let mut nodes: Vec<UnitNode> = rows.into_iter().map(UnitNode::new).collect();
    let wants_links = ctx.look_ahead().field("links").exists()
        || ctx
            .look_ahead()
            .field("items")
            .field("nodes")
            .field("links")
            .exists();
    if wants_links {
        let mut links = loader
            .load_many(nodes.iter().map(|n| LinksOf(n.0.uuid)))
            .await
            .map_err(|e| e.extend())?;
        for node in &mut nodes {
            node.1 = Some(links.remove(&LinksOf(node.0.uuid)).unwrap_or_default());
        }
    }
    Ok(nodes)
}

/// Loads the graph's nested lists for many parents at once: the editor's page asks for every unit's nodes
/// and every node's links, which one query per parent turned into thousands of statements. Lists load all
/// their children's keys in one call (`units` its page's nodes and their links), so the batching does not
/// depend on the loader's timing window; single parents batch within it.
pub struct GraphLoader {
    db: DatabaseConnection,
}

impl GraphLoader {
    /// The loader, batching what one request asks for concurrently.
    pub fn new(db: DatabaseConnection) -> DataLoader<Self> {
        DataLoader::new(Self { db }, tokio::spawn).max_batch_size(LOADER_BATCH)
    }
}

/// Most parents in one loader query: two variables each stay under SQLite's 32,766.
const LOADER_BATCH: usize = 10_000;

/// The nodes of a unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodesOf(pub uuid::Uuid);

/// The links into or out of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinksOf(pub uuid::Uuid);

impl Loader<NodesOf> for GraphLoader {
    type Value = Vec<unit_nodes::Model>;
    type Error = Arc<Error>;

    async fn load(&self, keys: &[NodesOf]) -> Result<HashMap<NodesOf, Self::Value>, Self::Error> {
        let units = keys.iter().map(|k| k.0);
        let rows = nodes::of_units(&self.db, units).await.map_err(Arc::new)?;
        let mut found: HashMap<NodesOf, Self::Value> = HashMap::new();
        for row in rows {
            found.entry(NodesOf(row.unit_uuid)).or_default().push(row);
        }
        Ok(found)
    }
}

impl Loader<LinksOf> for GraphLoader {
    type Value = Vec<unit_node_edges::Model>;
    type Error = Arc<Error>;

    async fn load(&self, keys: &[LinksOf]) -> Result<HashMap<LinksOf, Self::Value>, Self::Error> {
        let wanted: HashSet<uuid::Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = links::of_nodes(&self.db, wanted.iter().copied())
            .await
            .map_err(Arc::new)?;
        let mut found: HashMap<LinksOf, Self::Value> = HashMap::new();
        for row in rows {
            for end in [row.output_node_uuid, row.input_node_uuid] {
                if wanted.contains(&end) {
                    found.entry(LinksOf(end)).or_default().push(row.clone());
                }
            }
        }
        Ok(found)
    }
}

/// A rollout: a repo_unit's units moved to one commit in waves.
#[derive(SimpleObject)]
pub struct Rollout {
    uuid: ID,
    repo_unit_uuid: ID,
    creator_uuid: ID,
    target_commit: String,
    batch_size: i32,
    max_failure_ratio: f64,
    wave_timeout_seconds: i32,
    /// `running`, `completed` or `halted`.
    status: String,
    /// The wave running or last run (0 before the first).
    wave: i32,
    /// Why it halted.
    detail: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<crate::entities::rollouts::Model> for Rollout {
    fn from(row: crate::entities::rollouts::Model) -> Self {
        Self {
            uuid: ID(row.uuid.to_string()),
            repo_unit_uuid: ID(row.repo_unit_uuid.to_string()),
            creator_uuid: ID(row.creator_uuid.to_string()),
            target_commit: row.target_commit,
            batch_size: row.batch_size,
            max_failure_ratio: row.max_failure_ratio,
            wave_timeout_seconds: row.wave_timeout_seconds,
            status: row.status,
            wave: row.wave,
            detail: row.detail,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One entry of a unit's update audit log.
#[derive(SimpleObject)]
pub struct UpdateAttempt {
    rollout_uuid: Option<ID>,
    wave: Option<i32>,
    from_commit: Option<String>,
    target_commit: String,
    /// `pending`, `done`, `failed` or `superseded`.
    status: String,
    detail: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<crate::entities::update_attempts::Model> for UpdateAttempt {
    fn from(row: crate::entities::update_attempts::Model) -> Self {
        Self {
            rollout_uuid: row.rollout_uuid.map(|u| ID(u.to_string())),
            wave: row.wave,
            from_commit: row.from_commit,
            target_commit: row.target_commit,
            status: row.status,
            detail: row.detail,
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

#[derive(InputObject)]
pub struct StartRolloutInput {
    repo_unit_uuid: ID,
    /// A commit on the repo_unit's default branch.
    commit: String,
    #[graphql(default = 10)]
    batch_size: u32,
    /// Halt when more than this share of a wave fails (0 to 1).
    #[graphql(default = 0.2)]
    max_failure_ratio: f64,
    /// How long a wave's units have to report the commit.
    #[graphql(default = 600)]
    wave_timeout_seconds: u32,
}

/// A page of units.
#[derive(SimpleObject)]
pub struct UnitPage {
    total: u64,
    items: Vec<Unit>,
}

#[derive(InputObject)]
pub struct CreateUnitInput {
    repo_unit_uuid: ID,
    /// Unique on the instance.
    name: String,
    #[graphql(default_with = "VisibilityLevel::Public")]
    visibility: VisibilityLevel,
    /// Follow the default branch (and update as it moves); off: pin `branch` + `commit`, or `tag`.
    #[graphql(default = true)]
    follows_default_branch: bool,
    branch: Option<String>,
    commit: Option<String>,
    tag: Option<String>,
    /// Values for keys of `env_example.json` (and the tunable `PU_*` keys).
    env: Option<Json<Map<String, Value>>>,
}

/// Fields left out stay unchanged. Giving `followsDefaultBranch` sets a new target (with `branch` +
/// `commit` or `tag` when false), and the schema rules run.
#[derive(InputObject)]
pub struct UpdateUnitInput {
    name: Option<String>,
    visibility: Option<VisibilityLevel>,
    follows_default_branch: Option<bool>,
    branch: Option<String>,
    commit: Option<String>,
    tag: Option<String>,
}

#[derive(InputObject)]
pub struct UpdateUnitNodeInput {
    is_rewritable_input: Option<bool>,
    history_kind: Option<HistoryKind>,
    /// With `LAST_N`: how many values.
    history_limit: Option<u32>,
    /// With `WINDOW`: how many seconds.
    history_window_seconds: Option<u32>,
    /// An output's processing, replacing what it had.
    processing: Option<UnitNodeProcessingInput>,
}

#[derive(Default)]
pub struct UnitQuery;

#[Object]
impl UnitQuery {
    async fn unit(&self, ctx: &Context<'_>, uuid: ID) -> Result<Unit> {
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(Unit::new(
            service::get(services(ctx)?, &actor(ctx), uuid)
                .await
                .gql()?,
        ))
    }

    /// Units you may see, by name (`search`: at most 200 characters).
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 2)")]
    async fn units(
        &self,
        ctx: &Context<'_>,
        repo_unit_uuid: Option<ID>,
        creator_uuid: Option<ID>,
        search: Option<String>,
        #[graphql(default = 50)] limit: u64,
        #[graphql(default = 0)] offset: u64,
    ) -> Result<UnitPage> {
        if search
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS)
        {
            return Err(Error::Validation(crate::domain::InvalidValue {
                field: "search",
                message: format!("may have at most {MAX_SEARCH_CHARS} characters"),
            }))
            .gql();
        }
        let filter = UnitFilter {
            repo_unit_uuid: repo_unit_uuid.as_ref().map(parse_uuid).transpose().gql()?,
            creator_uuid: creator_uuid.as_ref().map(parse_uuid).transpose().gql()?,
            name_contains: search,
        };
        let (rows, total) = service::list(services(ctx)?, &actor(ctx), filter, limit, offset)
            .await
            .gql()?;
        let mut items: Vec<Unit> = rows.into_iter().map(Unit::new).collect();
        let nodes = ctx.look_ahead().field("items").field("nodes");
        if nodes.exists() {
            // The page's nodes in one load and their links in another, whatever the page's size (the
            // editor asks for every unit's).
            let loader = ctx.data::<DataLoader<GraphLoader>>()?;
            let mut found = loader
                .load_many(items.iter().map(|u| NodesOf(u.0.uuid)))
                .await
                .map_err(|e| e.extend())?;
            let rows: Vec<unit_nodes::Model> = items
                .iter()
                .flat_map(|u| found.remove(&NodesOf(u.0.uuid)).unwrap_or_default())
                .collect();
            let mut nodes = with_links(ctx, loader, rows).await?.into_iter().peekable();
            for unit in &mut items {
                let mut own = Vec::new();
                while let Some(node) = nodes.next_if(|n| n.0.unit_uuid == unit.0.uuid) {
                    own.push(node);
                }
                unit.1 = Some(own);
            }
        }
        Ok(UnitPage { total, items })
    }

    /// Rollouts of a repo_unit, newest first.
    async fn rollouts(&self, ctx: &Context<'_>, repo_unit_uuid: ID) -> Result<Vec<Rollout>> {
        let uuid = parse_uuid(&repo_unit_uuid).gql()?;
        let rows = rollouts::of_repo_unit(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Rollout::from).collect())
    }

    async fn rollout(&self, ctx: &Context<'_>, uuid: ID) -> Result<Rollout> {
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(rollouts::get(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?
            .into())
    }

    async fn unit_node(&self, ctx: &Context<'_>, uuid: ID) -> Result<UnitNode> {
        let uuid = parse_uuid(&uuid).gql()?;
        let (node, _) = links::visible_node(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(UnitNode::new(node))
    }
}

#[derive(Default)]
pub struct UnitMutation;

fn target(
    follows: bool,
    branch: Option<String>,
    commit: Option<String>,
    tag: Option<String>,
) -> Result<UnitTarget> {
    UnitTarget::from_fields(follows, branch, commit, tag).gql()
}

#[Object]
impl UnitMutation {
    /// Creates a unit with its variables and env.json; refused until the target commit is usable.
    async fn create_unit(&self, ctx: &Context<'_>, input: CreateUnitInput) -> Result<Unit> {
        let form = NewUnit {
            repo_unit_uuid: parse_uuid(&input.repo_unit_uuid).gql()?,
            name: input.name,
            visibility: Visibility::from(input.visibility),
            target: target(
                input.follows_default_branch,
                input.branch,
                input.commit,
                input.tag,
            )?,
            env: input.env.map(|j| j.0).unwrap_or_default(),
        };
        Ok(Unit::new(
            service::create(services(ctx)?, &actor(ctx), form)
                .await
                .gql()?,
        ))
    }

    async fn update_unit(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        input: UpdateUnitInput,
    ) -> Result<Unit> {
        let uuid = parse_uuid(&uuid).gql()?;
        let new_target = match input.follows_default_branch {
            Some(follows) => Some(target(follows, input.branch, input.commit, input.tag)?),
            None if input.branch.is_some() || input.commit.is_some() || input.tag.is_some() => {
                return Err(Error::Validation(crate::domain::InvalidValue {
                    field: "followsDefaultBranch",
                    message: "give it with branch, commit or tag".into(),
                }))
                .gql();
            }
            None => None,
        };
        let change = UnitChange {
            name: input.name,
            visibility: input.visibility.map(Visibility::from),
            target: new_target,
        };
        Ok(Unit::new(
            service::update(services(ctx)?, &actor(ctx), uuid, change)
                .await
                .gql()?,
        ))
    }

    /// Deletes a unit with its variables, links, values and logs.
    async fn delete_unit(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::delete(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }

    /// Sets values of env.json (keys of env_example.json and tunable `PU_*` keys); returns the new env.json.
    async fn set_unit_env(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        env: Json<Map<String, Value>>,
    ) -> Result<Json<Value>> {
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(object(
            env::edit(services(ctx)?, &actor(ctx), uuid, &env.0)
                .await
                .gql()?,
        ))
    }

    /// Revokes the unit's token and keys and issues new ones; returns the new env.json.
    async fn regenerate_unit_token(&self, ctx: &Context<'_>, uuid: ID) -> Result<Json<Value>> {
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(object(
            env::regenerate(services(ctx)?, &actor(ctx), uuid)
                .await
                .gql()?,
        ))
    }

    /// Moves your units of a repo_unit (all of them, for an admin) to a commit in waves.
    async fn start_rollout(&self, ctx: &Context<'_>, input: StartRolloutInput) -> Result<Rollout> {
        let form = rollouts::NewRollout {
            repo_unit_uuid: parse_uuid(&input.repo_unit_uuid).gql()?,
            commit: input.commit,
            batch_size: input.batch_size,
            max_failure_ratio: input.max_failure_ratio,
            wave_timeout_seconds: input.wave_timeout_seconds,
        };
        Ok(rollouts::start(services(ctx)?, &actor(ctx), form)
            .await
            .gql()?
            .into())
    }

    /// Asks the unit to publish its whole log (`log_sync/pepeunit`).
    async fn request_log_sync(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::send_command(services(ctx)?, &actor(ctx), uuid, UnitCommand::LogSync)
            .await
            .gql()?;
        Ok(true)
    }

    /// Asks the unit to restart (`reset/pepeunit`).
    async fn reset_unit(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::send_command(services(ctx)?, &actor(ctx), uuid, UnitCommand::Reset)
            .await
            .gql()?;
        Ok(true)
    }

    /// Links an output to an input; the input's unit gets the output's topic in its schema.json.
    async fn create_link(
        &self,
        ctx: &Context<'_>,
        output_uuid: ID,
        input_uuid: ID,
    ) -> Result<UnitNodeEdge> {
        let output = parse_uuid(&output_uuid).gql()?;
        let input = parse_uuid(&input_uuid).gql()?;
        let edge = links::create(services(ctx)?, &actor(ctx), output, input)
            .await
            .gql()?;
        Ok(edge.into())
    }

    async fn delete_link(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        links::delete(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }

    /// Sets an input's value; the broker publishes it to the unit.
    async fn set_input_value(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        value: String,
    ) -> Result<UnitNode> {
        let uuid = parse_uuid(&uuid).gql()?;
        Ok(UnitNode::new(
            data::set_input_value(services(ctx)?, &actor(ctx), uuid, &value)
                .await
                .gql()?,
        ))
    }

    async fn update_unit_node(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        input: UpdateUnitNodeInput,
    ) -> Result<UnitNode> {
        let uuid = parse_uuid(&uuid).gql()?;
        let history = match input.history_kind {
            None => None,
            Some(HistoryKind::LastValue) => Some(HistoryPolicy::LastValue),
            Some(HistoryKind::LastN) => {
                Some(HistoryPolicy::LastN(input.history_limit.unwrap_or(0)))
            }
            Some(HistoryKind::Window) => Some(HistoryPolicy::Window(
                input.history_window_seconds.unwrap_or(0),
            )),
        };
        let change = data::NodeChange {
            is_rewritable_input: input.is_rewritable_input,
            history,
            processing: input.processing.map(Processing::from),
        };
        Ok(UnitNode::new(
            data::update_node(services(ctx)?, &actor(ctx), uuid, change)
                .await
                .gql()?,
        ))
    }
}
