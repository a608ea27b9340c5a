//! Units: devices built from a repo_unit at a target commit.
//!
//! A unit either follows its repo_unit's default branch (its target moves when a sync moves the branch) or
//! is pinned to a commit on a branch, or to a tag. Whenever the target changes — at creation, by the user,
//! or by a branch move — [`apply_target`] runs the design's rules in one transaction: variable nodes present
//! in both schemas stay with their links and history, new ones are added, missing ones are removed with
//! theirs, and env.json gains the new example keys and loses the dropped ones.

pub mod aggregates;
pub mod bundle;
pub mod csv;
pub mod data;
pub mod device;
pub mod env;
pub mod events;
pub mod grafana;
pub mod links;
pub mod live;
pub mod nodes;
pub mod processing;
pub mod rollouts;
pub mod schema_json;
pub mod series;
pub mod update_timeouts;

use chrono::Utc;
use pepeunit_protocol::Visibility;
use pepeunit_protocol::env::EnvExample;
use pepeunit_protocol::schema::SchemaExample;
use pepeunit_repositories::{CommitCheck, Mirror, RepoError, check_commit};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::NodeName;
use crate::entities::{repo_units, units};
use crate::error::{Error, Result};
use crate::services::repo_sync::RepoEvent;
use crate::services::repo_units::{blocking, invalid};
use crate::services::units::events::{UnitCommand, UnitEvent};
use crate::services::{Actor, Services, access};

/// Which commit a unit runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitTarget {
    /// The head of the repo_unit's default branch, updated as it moves.
    FollowDefaultBranch,
    /// A commit on a branch (given as a full or abbreviated id), fixed until the user changes it.
    Commit { branch: String, commit: String },
    /// A tag, fixed until the user changes it.
    Tag(String),
}

impl UnitTarget {
    /// The target from a form's fields; `VALIDATION` names the field that does not fit.
    pub fn from_fields(
        follows_default_branch: bool,
        branch: Option<String>,
        commit: Option<String>,
        tag: Option<String>,
    ) -> Result<Self> {
        let blank = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        match (
            follows_default_branch,
            blank(branch),
            blank(commit),
            blank(tag),
        ) {
            (true, None, None, None) => Ok(Self::FollowDefaultBranch),
            (true, ..) => Err(invalid(
                "followsDefaultBranch",
                "a unit that follows the default branch takes no branch, commit or tag",
            )),
            (false, None, None, Some(tag)) => Ok(Self::Tag(tag)),
            (false, Some(branch), Some(commit), None) => Ok(Self::Commit { branch, commit }),
            (false, _, _, Some(_)) => {
                Err(invalid("tag", "pin either a tag or a branch and commit"))
            }
            (false, None, _, None) => Err(invalid("branch", "a pinned unit needs a branch")),
            (false, Some(_), None, None) => Err(invalid(
                "commit",
                "a pinned unit needs a commit on its branch",
            )),
        }
    }
}

/// What a create form sends.
#[derive(Debug, Clone)]
pub struct NewUnit {
    pub repo_unit_uuid: Uuid,
    pub name: String,
    pub visibility: Visibility,
    pub target: UnitTarget,
    /// Values for the keys of `env_example.json`; the rest take the example's values.
    pub env: Map<String, Value>,
}

/// A partial change of a unit.
#[derive(Debug, Clone, Default)]
pub struct UnitChange {
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub target: Option<UnitTarget>,
}

/// A target resolved against the mirror, with both example files of its commit.
pub(crate) struct ResolvedTarget {
    pub target: UnitTarget,
    pub branch: Option<String>,
    pub commit: String,
    pub env_example: EnvExample,
    pub schema: SchemaExample,
}

/// Resolves `target` and refuses a commit that cannot build units, naming what is wrong.
pub(crate) async fn resolve_target(
    services: &Services,
    repo: &repo_units::Model,
    target: UnitTarget,
) -> Result<ResolvedTarget> {
    let path = services.repos().mirror_path(repo.uuid);
    let default_branch = repo.default_branch.clone();
    let (field, branch, check) = {
        let target = target.clone();
        blocking(move || -> std::result::Result<_, RepoError> {
            let mirror = Mirror::open(&path)?;
            let (field, branch, revision) = match &target {
                UnitTarget::FollowDefaultBranch => {
                    let Some(branch) = default_branch.or(mirror.default_branch()?) else {
                        return Ok(("repoUnitUuid", None, None));
                    };
                    let head = format!("refs/heads/{branch}");
                    ("repoUnitUuid", Some(branch), Some(head))
                }
                UnitTarget::Commit { branch, commit } => {
                    let head = format!("refs/heads/{branch}");
                    if mirror.resolve(&head).is_err() {
                        return Err(RepoError::UnknownRevision(branch.clone()));
                    }
                    if !mirror.contains(&head, commit)? {
                        return Ok(("commit", Some(branch.clone()), None));
                    }
                    ("commit", Some(branch.clone()), Some(commit.clone()))
                }
                UnitTarget::Tag(tag) => ("tag", None, Some(format!("refs/tags/{tag}"))),
            };
            let check: Option<CommitCheck> = revision
                .map(|revision| check_commit(&mirror, &revision))
                .transpose()?;
            Ok((field, branch, check))
        })
        .await?
    };
    let Some(check) = check else {
        return Err(match target {
            UnitTarget::FollowDefaultBranch => invalid(
                "repoUnitUuid",
                "the repo_unit has no branch yet; sync it or push a commit",
            ),
            _ => invalid(field, "the commit is not on that branch"),
        });
    };
    if !check.usable() {
        return Err(invalid(
            field,
            format!(
                "commit {} cannot build units: {}",
                check.commit,
                check.problems.join("; ")
            ),
        ));
    }
    let (Some(env_example), Some(schema)) = (check.env_example, check.schema_example) else {
        return Err(Error::internal("a usable commit without its files"));
    };
    Ok(ResolvedTarget {
        branch: match &target {
            UnitTarget::Tag(_) => None,
            _ => branch,
        },
        target,
        commit: check.commit,
        env_example,
        schema,
    })
}

/// Both example files of the unit's target commit, read and checked as at creation.
pub(crate) async fn target_examples(
    services: &Services,
    unit: &units::Model,
) -> Result<(EnvExample, SchemaExample)> {
    let path = services.repos().mirror_path(unit.repo_unit_uuid);
    let commit = unit
        .target_commit
        .clone()
        .ok_or_else(|| Error::internal("unit without a target commit"))?;
    let check = blocking(move || check_commit(&Mirror::open(&path)?, &commit)).await?;
    match (check.env_example, check.schema_example) {
        (Some(env), Some(schema)) => Ok((env, schema)),
        _ => Err(Error::internal(format!(
            "target commit {} is no longer usable: {}",
            check.commit,
            check.problems.join("; ")
        ))),
    }
}

fn unique_name_error(error: sea_orm::DbErr) -> Error {
    Error::on_unique(
        error,
        "a unit with this name already exists on this instance",
    )
}

/// Update status: the unit was told to run a new commit and has not reported it yet.
pub const UPDATE_PENDING: &str = "pending";
/// Update status: the unit reported running its target commit.
pub const UPDATE_DONE: &str = "done";
/// Update status: the unit refused its target or rolled back from it, and said why in its state.
pub const UPDATE_FAILED: &str = "failed";

/// Tells listeners that `unit` now targets `commit` and that its schema may have changed.
pub(crate) fn announce_target(services: &Services, unit: Uuid, commit: &str) {
    services.unit_events().send(UnitEvent::TargetChanged {
        unit,
        commit: commit.to_owned(),
    });
    services.unit_events().send(UnitEvent::SchemaChanged(unit));
}

/// Points `unit` at `resolved` and brings its nodes and env.json in line, inside `txn`.
pub(crate) async fn apply_target(
    services: &Services,
    txn: &impl ConnectionTrait,
    unit: units::Model,
    resolved: &ResolvedTarget,
    rollout: Option<(Uuid, i32)>,
) -> Result<units::Model> {
    nodes::sync_with_schema(txn, &unit, &resolved.schema).await?;
    let stored = env::StoredEnv::open(services, &unit)?;
    let sealed = stored.with_example(&resolved.env_example).seal(services)?;
    let moved = unit
        .target_commit
        .as_deref()
        .is_some_and(|old| old != resolved.commit);
    if moved {
        rollouts::record_attempt(txn, &unit, &resolved.commit, rollout).await?;
    }
    let mut active = unit.into_active_model();
    if moved {
        active.update_status = Set(Some(UPDATE_PENDING.to_owned()));
        active.update_status_at = Set(Some(Utc::now()));
    }
    active.follows_default_branch = Set(resolved.target == UnitTarget::FollowDefaultBranch);
    active.repo_branch = Set(resolved.branch.clone());
    active.repo_commit = Set(match &resolved.target {
        UnitTarget::Commit { .. } => Some(resolved.commit.clone()),
        _ => None,
    });
    active.repo_tag = Set(match &resolved.target {
        UnitTarget::Tag(tag) => Some(tag.clone()),
        _ => None,
    });
    active.target_commit = Set(Some(resolved.commit.clone()));
    active.env_encrypted = Set(Some(sealed));
    active.updated_at = Set(Utc::now());
    Ok(active.update(txn).await?)
}

/// Creates a unit with its variable nodes and sealed env.json, or nothing at all.
pub async fn create(services: &Services, actor: &Actor, form: NewUnit) -> Result<units::Model> {
    let user = actor.require_user()?;
    let name = NodeName::parse(&form.name)?;
    let repo = access::find_visible::<repo_units::Entity>(
        services.db(),
        actor,
        form.repo_unit_uuid,
        "repo_unit",
    )
    .await?;
    let resolved = resolve_target(services, &repo, form.target).await?;
    let uuid = Uuid::new_v4();
    let stored = env::StoredEnv::generate(services, uuid, 0, &resolved.env_example, &form.env)?;
    let now = Utc::now();
    let txn = crate::db::begin_write(services.db()).await?;
    let row = units::ActiveModel {
        uuid: Set(uuid),
        creator_uuid: Set(user.id.as_uuid()),
        repo_unit_uuid: Set(repo.uuid),
        name: Set(name.as_str().to_owned()),
        visibility: Set(form.visibility),
        follows_default_branch: Set(true),
        repo_branch: Set(None),
        repo_commit: Set(None),
        repo_tag: Set(None),
        target_commit: Set(None),
        reported_commit: Set(None),
        update_status: Set(None),
        update_status_at: Set(None),
        env_encrypted: Set(Some(stored.seal(services)?)),
        token_version: Set(0),
        last_state: Set(None),
        last_state_at: Set(None),
        state_storage: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(unique_name_error)?;
    let row = apply_target(services, &txn, row, &resolved, None).await?;
    txn.commit().await?;
    tracing::info!(unit = %uuid, repo_unit = %repo.uuid, commit = %resolved.commit, "unit created");
    Ok(row)
}

/// One unit, if `actor` may see it.
pub async fn get(services: &Services, actor: &Actor, uuid: Uuid) -> Result<units::Model> {
    access::find_visible::<units::Entity>(services.db(), actor, uuid, "unit").await
}

/// Which units a list shows.
#[derive(Debug, Clone, Default)]
pub struct UnitFilter {
    pub repo_unit_uuid: Option<Uuid>,
    pub creator_uuid: Option<Uuid>,
    pub name_contains: Option<String>,
}

/// Units `actor` may see, by name, with the total count.
pub async fn list(
    services: &Services,
    actor: &Actor,
    filter: UnitFilter,
    limit: u64,
    offset: u64,
) -> Result<(Vec<units::Model>, u64)> {
    let mut select = access::visible_to(units::Entity::find(), actor);
    if let Some(repo) = filter.repo_unit_uuid {
        select = select.filter(units::Column::RepoUnitUuid.eq(repo));
    }
    if let Some(creator) = filter.creator_uuid {
        select = select.filter(units::Column::CreatorUuid.eq(creator));
    }
    if let Some(text) = filter.name_contains.filter(|t| !t.is_empty()) {
        select = select.filter(units::Column::Name.contains(text));
    }
    let total = select.clone().count(services.db()).await?;
    let rows = select
        .order_by_asc(units::Column::Name)
        .limit(limit.min(500))
        .offset(offset)
        .all(services.db())
        .await?;
    Ok((rows, total))
}

/// Renames, changes visibility or moves the target; the creator or an admin only.
pub async fn update(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    change: UnitChange,
) -> Result<units::Model> {
    let unit = get(services, actor, uuid).await?;
    access::ensure_can_edit(actor, unit.creator_uuid)?;
    let resolved = match change.target {
        Some(target) => {
            let repo = repo_units::Entity::find_by_id(unit.repo_unit_uuid)
                .one(services.db())
                .await?
                .ok_or(Error::NotFound("repo_unit"))?;
            Some(resolve_target(services, &repo, target).await?)
        }
        None => None,
    };
    let txn = crate::db::begin_write(services.db()).await?;
    let mut active = unit.clone().into_active_model();
    if let Some(name) = change.name {
        active.name = Set(NodeName::parse(&name)?.as_str().to_owned());
    }
    if let Some(visibility) = change.visibility {
        active.visibility = Set(visibility);
        nodes::set_visibility(&txn, unit.uuid, visibility).await?;
    }
    active.updated_at = Set(Utc::now());
    let before = unit.target_commit.clone();
    let visibility_changed = change.visibility.is_some_and(|v| v != unit.visibility);
    let mut row = active.update(&txn).await.map_err(unique_name_error)?;
    if let Some(resolved) = &resolved {
        row = apply_target(services, &txn, row, resolved, None).await?;
    }
    txn.commit().await?;
    if visibility_changed {
        services
            .unit_events()
            .send(UnitEvent::VisibilityChanged(row.uuid));
    }
    if let Some(commit) = row
        .target_commit
        .as_deref()
        .filter(|c| Some(*c) != before.as_deref())
    {
        announce_target(services, row.uuid, commit);
    }
    Ok(row)
}

/// Deletes a unit and everything it owns (nodes, links, values, logs, grants) in one statement. Units
/// whose inputs listened to its outputs get a new schema.json.
pub async fn delete(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let unit = get(services, actor, uuid).await?;
    access::ensure_can_edit(actor, unit.creator_uuid)?;
    let listeners = links::units_listening_to(services.db(), uuid).await?;
    units::Entity::delete_by_id(uuid)
        .exec(services.db())
        .await?;
    services.unit_events().send(UnitEvent::Revoked(uuid));
    for listener in listeners.into_iter().filter(|l| *l != uuid) {
        services
            .unit_events()
            .send(UnitEvent::SchemaChanged(listener));
    }
    tracing::info!(unit = %uuid, "unit deleted");
    Ok(())
}

/// Sends a unit a command (log sync or reset); its creator or an admin.
pub async fn send_command(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    command: UnitCommand,
) -> Result<()> {
    let unit = get(services, actor, uuid).await?;
    access::ensure_can_edit(actor, unit.creator_uuid)?;
    services.unit_events().send(UnitEvent::Command {
        unit: uuid,
        command,
    });
    Ok(())
}

/// Moves every unit that follows `branch` of `repo_unit` to `commit`. A commit that cannot build units
/// leaves them where they are, with the reason in the log.
pub async fn follow_branch(
    services: &Services,
    repo_unit: Uuid,
    branch: &str,
    commit: &str,
) -> Result<usize> {
    let Some(repo) = repo_units::Entity::find_by_id(repo_unit)
        .one(services.db())
        .await?
    else {
        return Ok(0);
    };
    let followers = units::Entity::find()
        .filter(units::Column::RepoUnitUuid.eq(repo_unit))
        .filter(units::Column::FollowsDefaultBranch.eq(true))
        .filter(units::Column::RepoBranch.eq(branch))
        .filter(units::Column::TargetCommit.ne(commit))
        .all(services.db())
        .await?;
    if followers.is_empty() {
        return Ok(0);
    }
    let resolved = match resolve_target(services, &repo, UnitTarget::FollowDefaultBranch).await {
        Ok(resolved) if resolved.commit == commit => resolved,
        Ok(_) => return Ok(0),
        Err(error) => {
            tracing::warn!(%repo_unit, branch, commit, %error, "followers stay on their commit");
            return Ok(0);
        }
    };
    let txn = crate::db::begin_write(services.db()).await?;
    for unit in &followers {
        apply_target(services, &txn, unit.clone(), &resolved, None).await?;
    }
    txn.commit().await?;
    for unit in &followers {
        announce_target(services, unit.uuid, &resolved.commit);
    }
    tracing::info!(%repo_unit, branch, commit, units = followers.len(), "followers moved");
    Ok(followers.len())
}

/// Moves followers whenever a sync moves a branch; runs until the event stream closes.
pub async fn run_followers(services: Services) {
    let mut events = services.repo_sync().subscribe();
    loop {
        match events.recv().await {
            Ok(RepoEvent::BranchMoved {
                repo_unit,
                branch,
                new,
                ..
            }) => {
                let moved = crate::db::retry_busy("moving followers", || {
                    follow_branch(&services, repo_unit.as_uuid(), &branch, &new)
                })
                .await;
                if let Err(error) = moved {
                    tracing::warn!(%error, %branch, "moving followers failed");
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "followers missed branch events; catching up by scan"
                );
                catch_up(&services).await;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Re-checks every followed branch against its mirror, after missed events or at start-up.
pub async fn catch_up(services: &Services) {
    let pairs: Vec<(Uuid, Option<String>)> = match units::Entity::find()
        .select_only()
        .column(units::Column::RepoUnitUuid)
        .column(units::Column::RepoBranch)
        .filter(units::Column::FollowsDefaultBranch.eq(true))
        .distinct()
        .into_tuple()
        .all(services.db())
        .await
    {
        Ok(pairs) => pairs,
        Err(error) => {
            tracing::warn!(%error, "catch-up scan failed");
            return;
        }
    };
    for (repo_unit, branch) in pairs {
        let Some(branch) = branch else { continue };
        let path = services.repos().mirror_path(repo_unit);
        let head_ref = format!("refs/heads/{branch}");
        let head = blocking(move || Mirror::open(&path)?.resolve(&head_ref)).await;
        if let Ok(head) = head
            && let Err(error) = follow_branch(services, repo_unit, &branch, &head).await
        {
            tracing::warn!(%error, %repo_unit, "catch-up failed");
        }
    }
}
