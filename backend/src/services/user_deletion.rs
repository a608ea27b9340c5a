//! Deleting an account: what it removes, what it keeps, and the "ghost" that keeps it.
//!
//! Seed 003: deleting a user deletes every node linked to them. One exception, as forges handle it: a
//! repo_unit other people's units are built from is not deleted (their devices would lose their firmware
//! source) but passes to the **ghost** account, as GitHub's deleted users' content passes to `@ghost`.
//! The ghost cannot log in; only admins may change what it holds. Everything else the user created goes in
//! one transaction: their units (with their variables, history, logs and links), their other
//! repo_units, tokens, grants, alert rules and channels. Units of other users that listened to the deleted
//! units' outputs get `schema_update`. [`plan`] shows all of that before anything is done.

use chrono::Utc;
use pepeunit_protocol::UserId;
use sea_orm::sea_query::{Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use crate::domain::{UserRole, UserStatus};
use crate::entities::{repo_units, unit_node_edges, unit_nodes, units, users};
use crate::error::{Error, Result};
use crate::services::units::events::UnitEvent;
use crate::services::{Actor, Services};

/// The ghost account's id, the same on every instance.
pub const GHOST_UUID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0001);
/// The ghost's login; [`crate::domain::Login`] refuses it for new accounts.
pub const GHOST_LOGIN: &str = "ghost";

/// How many names of each kind a plan lists; the counts are always exact.
const NAMES_SHOWN: u64 = 100;

/// A node named in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub uuid: Uuid,
    pub name: String,
}

/// A repo_unit that passes to the ghost, and how many other users' units are built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub repo_unit: Named,
    pub units_of_others: u64,
}

/// What deleting a user would do, as [`delete`] will do it.
#[derive(Debug, Clone)]
pub struct DeletionPlan {
    pub user: users::Model,
    pub unit_count: u64,
    /// The first units by name; [`DeletionPlan::unit_count`] has them all.
    pub units: Vec<Named>,
    pub repo_unit_count: u64,
    pub repo_units: Vec<Named>,
    /// Repo_units that stay, passing to the ghost.
    pub kept_repo_units: Vec<Kept>,
    /// Links into or out of the deleted units.
    pub link_count: u64,
    /// Other users' units that lose an input link and get `schema_update`.
    pub affected_units: Vec<Uuid>,
}

/// The units `user` created.
fn units_of(user: Uuid) -> SelectStatement {
    Query::select()
        .column(units::Column::Uuid)
        .from(units::Entity)
        .and_where(Expr::col(units::Column::CreatorUuid).eq(user))
        .to_owned()
}

/// The variables of the units `user` created.
fn nodes_of(user: Uuid) -> SelectStatement {
    Query::select()
        .column(unit_nodes::Column::Uuid)
        .from(unit_nodes::Entity)
        .and_where(Expr::col(unit_nodes::Column::UnitUuid).in_subquery(units_of(user)))
        .to_owned()
}

/// The repo_units `user` created that units of other users are built from.
fn built_on_by_others(user: Uuid) -> SelectStatement {
    Query::select()
        .column(units::Column::RepoUnitUuid)
        .from(units::Entity)
        .and_where(Expr::col(units::Column::CreatorUuid).ne(user))
        .to_owned()
}

/// The user `id`, for the user themselves or an admin; the ghost is never deleted.
async fn deletable(db: &impl ConnectionTrait, actor: &Actor, id: UserId) -> Result<users::Model> {
    let me = actor.require_user()?;
    if me.id != id && !actor.is_admin() {
        return Err(Error::Forbidden(
            "only the user or an admin may delete an account".into(),
        ));
    }
    if id.as_uuid() == GHOST_UUID {
        return Err(Error::Conflict(
            "the ghost account holds deleted users' repo_units and cannot be deleted".into(),
        ));
    }
    users::Entity::find_by_id(id.as_uuid())
        .one(db)
        .await?
        .ok_or(Error::NotFound("user"))
}

/// What deleting `id` would remove and keep; nothing is changed.
pub async fn plan(services: &Services, actor: &Actor, id: UserId) -> Result<DeletionPlan> {
    let user = deletable(services.db(), actor, id).await?;
    plan_for(services.db(), user).await
}

async fn plan_for(db: &impl ConnectionTrait, user: users::Model) -> Result<DeletionPlan> {
    let owner = user.uuid;
    let own_units = units::Entity::find().filter(units::Column::CreatorUuid.eq(owner));
    let unit_count = own_units.clone().count(db).await?;
    let units = own_units
        .order_by_asc(units::Column::Name)
        .limit(NAMES_SHOWN)
        .all(db)
        .await?
        .into_iter()
        .map(|u| Named {
            uuid: u.uuid,
            name: u.name,
        })
        .collect();
    let own_repos = repo_units::Entity::find().filter(repo_units::Column::CreatorUuid.eq(owner));
    let deleted_repos = own_repos
        .clone()
        .filter(repo_units::Column::Uuid.not_in_subquery(built_on_by_others(owner)));
    let repo_unit_count = deleted_repos.clone().count(db).await?;
    let repo_units = deleted_repos
        .order_by_asc(repo_units::Column::Name)
        .limit(NAMES_SHOWN)
        .all(db)
        .await?
        .into_iter()
        .map(|r| Named {
            uuid: r.uuid,
            name: r.name,
        })
        .collect();
    let counts: Vec<(Uuid, i64)> = units::Entity::find()
        .select_only()
        .column(units::Column::RepoUnitUuid)
        .column_as(units::Column::Uuid.count(), "units_of_others")
        .filter(units::Column::CreatorUuid.ne(owner))
        .filter(
            units::Column::RepoUnitUuid.in_subquery(
                Query::select()
                    .column(repo_units::Column::Uuid)
                    .from(repo_units::Entity)
                    .and_where(Expr::col(repo_units::Column::CreatorUuid).eq(owner))
                    .to_owned(),
            ),
        )
        .group_by(units::Column::RepoUnitUuid)
        .into_tuple()
        .all(db)
        .await?;
    let mut kept_repo_units = Vec::new();
    for repo in own_repos
        .filter(repo_units::Column::Uuid.is_in(counts.iter().map(|(uuid, _)| *uuid)))
        .order_by_asc(repo_units::Column::Name)
        .all(db)
        .await?
    {
        let units_of_others = counts
            .iter()
            .find(|(uuid, _)| *uuid == repo.uuid)
            .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
        kept_repo_units.push(Kept {
            repo_unit: Named {
                uuid: repo.uuid,
                name: repo.name,
            },
            units_of_others,
        });
    }
    let link_count = unit_node_edges::Entity::find()
        .filter(
            sea_orm::Condition::any()
                .add(unit_node_edges::Column::OutputNodeUuid.in_subquery(nodes_of(owner)))
                .add(unit_node_edges::Column::InputNodeUuid.in_subquery(nodes_of(owner))),
        )
        .count(db)
        .await?;
    let fed_inputs = Query::select()
        .column(unit_node_edges::Column::InputNodeUuid)
        .from(unit_node_edges::Entity)
        .and_where(Expr::col(unit_node_edges::Column::OutputNodeUuid).in_subquery(nodes_of(owner)))
        .to_owned();
    let affected_units: Vec<Uuid> = unit_nodes::Entity::find()
        .select_only()
        .column(unit_nodes::Column::UnitUuid)
        .distinct()
        .filter(unit_nodes::Column::Uuid.in_subquery(fed_inputs))
        .filter(unit_nodes::Column::UnitUuid.not_in_subquery(units_of(owner)))
        .into_tuple()
        .all(db)
        .await?;
    Ok(DeletionPlan {
        user,
        unit_count,
        units,
        repo_unit_count,
        repo_units,
        kept_repo_units,
        link_count,
        affected_units,
    })
}

/// The ghost account, made the first time a deletion needs it.
async fn ghost(db: &impl ConnectionTrait) -> Result<Uuid> {
    if users::Entity::find_by_id(GHOST_UUID)
        .one(db)
        .await?
        .is_some()
    {
        return Ok(GHOST_UUID);
    }
    // An account named `ghost` from before the name was reserved keeps its name.
    let taken = users::Entity::find()
        .filter(users::Column::Login.eq(GHOST_LOGIN))
        .one(db)
        .await?
        .is_some();
    let login = if taken {
        format!("{GHOST_LOGIN}-{}", &GHOST_UUID.simple().to_string()[24..])
    } else {
        GHOST_LOGIN.to_owned()
    };
    let now = Utc::now();
    users::ActiveModel {
        uuid: Set(GHOST_UUID),
        login: Set(login),
        email: Set("ghost@pepeunit.invalid".into()),
        // Not a hash of anything: no password verifies against it.
        password_hash: Set("!".into()),
        role: Set(UserRole::User),
        status: Set(UserStatus::Blocked),
        token_version: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        last_login_at: Set(None),
    }
    .insert(db)
    .await?;
    tracing::info!("the ghost account was created for a deleted user's repo_units");
    Ok(GHOST_UUID)
}

/// Deletes the account `id` as [`plan`] describes, in one transaction, and returns what was done.
pub async fn delete(services: &Services, actor: &Actor, id: UserId) -> Result<DeletionPlan> {
    let txn = crate::db::begin_write(services.db()).await?;
    let user = deletable(&txn, actor, id).await?;
    crate::services::users::ensure_not_last_admin(&txn, &user).await?;
    let plan = plan_for(&txn, user).await?;
    let owner = plan.user.uuid;
    if !plan.kept_repo_units.is_empty() {
        let ghost = ghost(&txn).await?;
        repo_units::Entity::update_many()
            .col_expr(repo_units::Column::CreatorUuid, Expr::value(ghost))
            .col_expr(repo_units::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(
                repo_units::Column::Uuid
                    .is_in(plan.kept_repo_units.iter().map(|k| k.repo_unit.uuid)),
            )
            .exec(&txn)
            .await?;
    }
    let deleted_units: Vec<Uuid> = units::Entity::find()
        .select_only()
        .column(units::Column::Uuid)
        .filter(units::Column::CreatorUuid.eq(owner))
        .into_tuple()
        .all(&txn)
        .await?;
    // The user's own units go first: they hold their repo_units with RESTRICT.
    units::Entity::delete_many()
        .filter(units::Column::CreatorUuid.eq(owner))
        .exec(&txn)
        .await?;
    users::Entity::delete_by_id(owner).exec(&txn).await?;
    txn.commit().await?;
    services.sessions().invalidate(owner);
    for unit in deleted_units {
        services.unit_events().send(UnitEvent::Revoked(unit));
    }
    for unit in &plan.affected_units {
        services.unit_events().send(UnitEvent::SchemaChanged(*unit));
    }
    tracing::info!(
        user = %owner,
        units = plan.unit_count,
        kept_repo_units = plan.kept_repo_units.len(),
        "user deleted"
    );
    Ok(plan)
}
