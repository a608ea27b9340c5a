//! Fleet updates in waves, and the audit log of every update attempt.
//!
//! A rollout moves the units of one repo_unit (the starter's own; an admin's: all) to one commit, `batch_size`
//! at a time. A wave is over when every unit in it reported the commit or `wave_timeout_seconds` passed;
//! units that did not report by then count as failed. When a wave's failure ratio is above
//! `max_failure_ratio` the rollout halts and the remaining units stay where they are. Rollouts run in the
//! background and resume after a restart.
//!
//! Every change of a unit's target commit, by a rollout or not, writes an `update_attempts` row: `pending`,
//! then `done` (the unit reported it), `failed` (a rollout wave timed out) or `superseded` (a newer target
//! came first).

use std::time::Duration;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use crate::domain::{InvalidValue, UserRole};
use crate::entities::{repo_units, rollouts, units, update_attempts, users};
use crate::error::{Error, Result};
use crate::services::units::{
    UPDATE_PENDING, UnitTarget, announce_target, apply_target, resolve_target,
};
use crate::services::{Actor, Services, access};

pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const HALTED: &str = "halted";
pub const FAILED: &str = "failed";
const SUPERSEDED: &str = "superseded";

/// How often a running wave is checked.
const POLL: Duration = Duration::from_millis(200);

/// Starts an attempt for `unit`, superseding any it still had pending.
pub(crate) async fn record_attempt(
    db: &impl ConnectionTrait,
    unit: &units::Model,
    commit: &str,
    rollout: Option<(Uuid, i32)>,
) -> Result<()> {
    let now = Utc::now();
    update_attempts::Entity::update_many()
        .col_expr(
            update_attempts::Column::Status,
            sea_orm::sea_query::Expr::value(SUPERSEDED),
        )
        .col_expr(
            update_attempts::Column::FinishedAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(update_attempts::Column::UnitUuid.eq(unit.uuid))
        .filter(update_attempts::Column::Status.eq(UPDATE_PENDING))
        .exec(db)
        .await?;
    update_attempts::ActiveModel {
        unit_uuid: Set(unit.uuid),
        rollout_uuid: Set(rollout.map(|r| r.0)),
        wave: Set(rollout.map(|r| r.1)),
        from_commit: Set(unit.reported_commit.clone().or(unit.target_commit.clone())),
        target_commit: Set(commit.to_owned()),
        status: Set(UPDATE_PENDING.to_owned()),
        detail: Set(None),
        started_at: Set(now),
        finished_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Closes `unit`'s pending attempts for `commit` with `status`.
pub(crate) async fn finish_attempts(
    db: &impl ConnectionTrait,
    unit: Uuid,
    commit: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<()> {
    use sea_orm::sea_query::Expr;
    update_attempts::Entity::update_many()
        .col_expr(update_attempts::Column::Status, Expr::value(status))
        .col_expr(
            update_attempts::Column::Detail,
            Expr::value(detail.map(str::to_owned)),
        )
        .col_expr(update_attempts::Column::FinishedAt, Expr::value(Utc::now()))
        .filter(update_attempts::Column::UnitUuid.eq(unit))
        .filter(update_attempts::Column::TargetCommit.eq(commit))
        .filter(update_attempts::Column::Status.eq(UPDATE_PENDING))
        .exec(db)
        .await?;
    Ok(())
}

/// What a rollout form sends.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub repo_unit_uuid: Uuid,
    pub commit: String,
    pub batch_size: u32,
    pub max_failure_ratio: f64,
    pub wave_timeout_seconds: u32,
}

fn invalid(field: &'static str, message: &str) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.into(),
    })
}

/// The units a rollout by `creator` covers: theirs, or every unit of the repo_unit for an admin.
async fn scope(services: &Services, rollout: &rollouts::Model) -> Result<Vec<units::Model>> {
    let admin = users::Entity::find_by_id(rollout.creator_uuid)
        .one(services.db())
        .await?
        .is_some_and(|u| u.role == UserRole::Admin);
    let mut select = units::Entity::find()
        .filter(units::Column::RepoUnitUuid.eq(rollout.repo_unit_uuid))
        .order_by_asc(units::Column::Name);
    if !admin {
        select = select.filter(units::Column::CreatorUuid.eq(rollout.creator_uuid));
    }
    Ok(select.all(services.db()).await?)
}

/// Starts a rollout and returns it; the waves run in the background.
pub async fn start(
    services: &Services,
    actor: &Actor,
    form: NewRollout,
) -> Result<rollouts::Model> {
    let user = actor.require_user()?;
    if form.batch_size == 0 {
        return Err(invalid("batchSize", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&form.max_failure_ratio) {
        return Err(invalid("maxFailureRatio", "must be between 0 and 1"));
    }
    if !(1..=86_400).contains(&form.wave_timeout_seconds) {
        return Err(invalid("waveTimeoutSeconds", "must be between 1 and 86400"));
    }
    let repo = access::find_visible::<repo_units::Entity>(
        services.db(),
        actor,
        form.repo_unit_uuid,
        "repo_unit",
    )
    .await?;
    let branch = repo
        .default_branch
        .clone()
        .ok_or_else(|| invalid("repoUnitUuid", "the repo_unit has no default branch yet"))?;
    let resolved = resolve_target(
        services,
        &repo,
        UnitTarget::Commit {
            branch: branch.clone(),
            commit: form.commit.clone(),
        },
    )
    .await?;
    let running = rollouts::Entity::find()
        .filter(rollouts::Column::RepoUnitUuid.eq(repo.uuid))
        .filter(rollouts::Column::Status.eq(RUNNING))
        .one(services.db())
        .await?;
    if running.is_some() {
        return Err(Error::Conflict(
            "a rollout of this repo_unit is already running".into(),
        ));
    }
    let now = Utc::now();
    let row = rollouts::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        repo_unit_uuid: Set(repo.uuid),
        creator_uuid: Set(user.id.as_uuid()),
        branch: Set(branch),
        target_commit: Set(resolved.commit.clone()),
        batch_size: Set(i32::try_from(form.batch_size).unwrap_or(i32::MAX)),
        max_failure_ratio: Set(form.max_failure_ratio),
        wave_timeout_seconds: Set(i32::try_from(form.wave_timeout_seconds).unwrap_or(86_400)),
        status: Set(RUNNING.to_owned()),
        wave: Set(0),
        detail: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let row = row.insert(services.db()).await?;
    if scope(services, &row).await?.is_empty() {
        rollouts::Entity::delete_by_id(row.uuid)
            .exec(services.db())
            .await?;
        return Err(invalid(
            "repoUnitUuid",
            "none of your units use this repo_unit",
        ));
    }
    tracing::info!(rollout = %row.uuid, commit = %row.target_commit, "rollout started");
    tokio::spawn(run(services.clone(), row.uuid));
    Ok(row)
}

async fn set_status(
    services: &Services,
    rollout: rollouts::Model,
    status: &str,
    wave: i32,
    detail: Option<String>,
) -> Result<()> {
    let mut active = rollout.into_active_model();
    active.status = Set(status.to_owned());
    active.wave = Set(wave);
    active.detail = Set(detail);
    active.updated_at = Set(Utc::now());
    active.update(services.db()).await?;
    Ok(())
}

/// Runs a rollout's waves until it completes or halts.
pub async fn run(services: Services, uuid: Uuid) {
    // The rollout's state is all in the database, so driving it again picks up where it was.
    let result = crate::db::retry_busy("driving the rollout", || drive(&services, uuid)).await;
    if let Err(error) = result {
        tracing::warn!(rollout = %uuid, %error, "rollout stopped by an error");
        if let Ok(Some(row)) = rollouts::Entity::find_by_id(uuid).one(services.db()).await {
            let wave = row.wave;
            let _ = set_status(
                &services,
                row,
                HALTED,
                wave,
                Some(format!("stopped by an error: {}", error.public_message())),
            )
            .await;
        }
    }
}

async fn drive(services: &Services, uuid: Uuid) -> Result<()> {
    loop {
        let Some(rollout) = rollouts::Entity::find_by_id(uuid)
            .one(services.db())
            .await?
        else {
            return Ok(());
        };
        if rollout.status != RUNNING {
            return Ok(());
        }
        // A wave in progress (after a restart) is waited for; otherwise the next one starts.
        let in_progress = rollout.wave > 0
            && update_attempts::Entity::find()
                .filter(update_attempts::Column::RolloutUuid.eq(uuid))
                .filter(update_attempts::Column::Wave.eq(rollout.wave))
                .filter(update_attempts::Column::Status.eq(UPDATE_PENDING))
                .one(services.db())
                .await?
                .is_some();
        let wave = if in_progress {
            rollout.wave
        } else {
            let batch: Vec<units::Model> = scope(services, &rollout)
                .await?
                .into_iter()
                .filter(|u| u.target_commit.as_deref() != Some(rollout.target_commit.as_str()))
                .take(usize::try_from(rollout.batch_size).unwrap_or(1))
                .collect();
            if batch.is_empty() {
                tracing::info!(rollout = %uuid, "rollout completed");
                let wave = rollout.wave;
                return set_status(services, rollout, COMPLETED, wave, None).await;
            }
            let wave = rollout.wave + 1;
            let repo = repo_units::Entity::find_by_id(rollout.repo_unit_uuid)
                .one(services.db())
                .await?
                .ok_or(Error::NotFound("repo_unit"))?;
            let resolved = resolve_target(
                services,
                &repo,
                UnitTarget::Commit {
                    branch: rollout.branch.clone(),
                    commit: rollout.target_commit.clone(),
                },
            )
            .await?;
            let txn = crate::db::begin_write(services.db()).await?;
            for unit in &batch {
                apply_target(services, &txn, unit.clone(), &resolved, Some((uuid, wave))).await?;
            }
            let mut active = rollout.clone().into_active_model();
            active.wave = Set(wave);
            active.updated_at = Set(Utc::now());
            active.update(&txn).await?;
            txn.commit().await?;
            for unit in &batch {
                announce_target(services, unit.uuid, &rollout.target_commit);
            }
            tracing::info!(rollout = %uuid, wave, units = batch.len(), "rollout wave started");
            wave
        };
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(u64::try_from(rollout.wave_timeout_seconds).unwrap_or(60));
        let attempts = loop {
            let attempts = update_attempts::Entity::find()
                .filter(update_attempts::Column::RolloutUuid.eq(uuid))
                .filter(update_attempts::Column::Wave.eq(wave))
                .all(services.db())
                .await?;
            let pending = attempts.iter().any(|a| a.status == UPDATE_PENDING);
            if !pending || tokio::time::Instant::now() >= deadline {
                break attempts;
            }
            tokio::time::sleep(POLL).await;
        };
        let mut failed = 0usize;
        for attempt in attempts
            .iter()
            .filter(|a| a.status != crate::services::units::UPDATE_DONE)
        {
            failed += 1;
            if attempt.status == UPDATE_PENDING {
                finish_attempts(
                    services.db(),
                    attempt.unit_uuid,
                    &attempt.target_commit,
                    FAILED,
                    Some("the unit did not report the commit in time"),
                )
                .await?;
                units::Entity::update_many()
                    .col_expr(
                        units::Column::UpdateStatus,
                        sea_orm::sea_query::Expr::value(FAILED),
                    )
                    .col_expr(
                        units::Column::UpdateStatusAt,
                        sea_orm::sea_query::Expr::value(Utc::now()),
                    )
                    .filter(units::Column::Uuid.eq(attempt.unit_uuid))
                    .exec(services.db())
                    .await?;
            }
        }
        let ratio = if attempts.is_empty() {
            0.0
        } else {
            failed as f64 / attempts.len() as f64
        };
        if ratio > rollout.max_failure_ratio {
            let detail = format!(
                "wave {wave}: {failed} of {} units failed, above the limit of {}",
                attempts.len(),
                rollout.max_failure_ratio
            );
            tracing::warn!(rollout = %uuid, %detail, "rollout halted");
            let row = rollouts::Entity::find_by_id(uuid)
                .one(services.db())
                .await?
                .ok_or(Error::NotFound("rollout"))?;
            let repo_unit = row.repo_unit_uuid;
            let halted = set_status(services, row, HALTED, wave, Some(detail.clone())).await;
            if halted.is_ok() {
                services
                    .alerts()
                    .observe_rollout_halted(uuid, repo_unit, &detail);
            }
            return halted;
        }
    }
}

/// Resumes every running rollout; at start-up.
pub async fn resume_all(services: &Services) {
    match rollouts::Entity::find()
        .filter(rollouts::Column::Status.eq(RUNNING))
        .all(services.db())
        .await
    {
        Ok(rows) => {
            for row in rows {
                tokio::spawn(run(services.clone(), row.uuid));
            }
        }
        Err(error) => tracing::warn!(%error, "resuming rollouts failed"),
    }
}

/// One rollout, for whoever may see its repo_unit.
pub async fn get(services: &Services, actor: &Actor, uuid: Uuid) -> Result<rollouts::Model> {
    let row = rollouts::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("rollout"))?;
    access::find_visible::<repo_units::Entity>(services.db(), actor, row.repo_unit_uuid, "rollout")
        .await?;
    Ok(row)
}

/// Rollouts of a repo_unit, newest first.
pub async fn of_repo_unit(
    services: &Services,
    actor: &Actor,
    repo_unit: Uuid,
) -> Result<Vec<rollouts::Model>> {
    access::find_visible::<repo_units::Entity>(services.db(), actor, repo_unit, "repo_unit")
        .await?;
    Ok(rollouts::Entity::find()
        .filter(rollouts::Column::RepoUnitUuid.eq(repo_unit))
        .order_by_desc(rollouts::Column::CreatedAt)
        .limit(100)
        .all(services.db())
        .await?)
}

/// A unit's update attempts, newest first; its creator and admins.
pub async fn attempts(
    services: &Services,
    actor: &Actor,
    unit: Uuid,
    limit: u64,
) -> Result<Vec<update_attempts::Model>> {
    let row = access::find_visible::<units::Entity>(services.db(), actor, unit, "unit").await?;
    access::ensure_can_edit(actor, row.creator_uuid)?;
    Ok(update_attempts::Entity::find()
        .filter(update_attempts::Column::UnitUuid.eq(unit))
        .order_by_desc(update_attempts::Column::Id)
        .limit(limit.min(1000))
        .all(services.db())
        .await?)
}
