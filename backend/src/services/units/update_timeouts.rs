//! Update timeouts: a single unit's update that the unit has not confirmed in time turns `failed`.
//!
//! Rollout waves fail their own late units (see [`super::rollouts`]); every other update attempt — setting a
//! target by hand or a followed branch moving — is checked here. The deadline is computed from the attempt's
//! stored `started_at`, so a restart neither forgets nor restarts the clock. The check runs in bounded
//! batches so a fleet of thousands of stale attempts never holds the database for long.

use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entities::{units, update_attempts};
use crate::error::Result;
use crate::services::Services;
use crate::services::units::{UPDATE_FAILED, UPDATE_PENDING};

/// Attempts failed per statement batch.
const BATCH: u64 = 200;

/// The reason written into a timed-out attempt, and sent to alert rules.
pub fn reason(timeout_seconds: u64) -> String {
    format!("the unit did not report the target commit within {timeout_seconds} s")
}

/// Fails every pending attempt outside a rollout that started more than the timeout ago; returns how many.
pub async fn fail_overdue(services: &Services) -> Result<usize> {
    let timeout_seconds = services.units().update_timeout_seconds;
    let cutoff = Utc::now()
        - chrono::Duration::seconds(i64::try_from(timeout_seconds).unwrap_or(i64::MAX / 1000));
    let detail = reason(timeout_seconds);
    let mut failed = 0;
    loop {
        let overdue = update_attempts::Entity::find()
            .filter(update_attempts::Column::Status.eq(UPDATE_PENDING))
            .filter(update_attempts::Column::RolloutUuid.is_null())
            .filter(update_attempts::Column::StartedAt.lt(cutoff))
            .order_by_asc(update_attempts::Column::Id)
            .limit(BATCH)
            .all(services.db())
            .await?;
        if overdue.is_empty() {
            return Ok(failed);
        }
        let txn = crate::db::begin_write(services.db()).await?;
        let ids: Vec<i64> = overdue.iter().map(|a| a.id).collect();
        // Still pending at write time: a unit that reported meanwhile keeps its `done`.
        update_attempts::Entity::update_many()
            .col_expr(update_attempts::Column::Status, Expr::value(UPDATE_FAILED))
            .col_expr(update_attempts::Column::Detail, Expr::value(detail.clone()))
            .col_expr(update_attempts::Column::FinishedAt, Expr::value(Utc::now()))
            .filter(update_attempts::Column::Id.is_in(ids))
            .filter(update_attempts::Column::Status.eq(UPDATE_PENDING))
            .exec(&txn)
            .await?;
        for attempt in &overdue {
            units::Entity::update_many()
                .col_expr(units::Column::UpdateStatus, Expr::value(UPDATE_FAILED))
                .col_expr(units::Column::UpdateStatusAt, Expr::value(Utc::now()))
                .filter(units::Column::Uuid.eq(attempt.unit_uuid))
                .filter(units::Column::TargetCommit.eq(attempt.target_commit.as_str()))
                .filter(units::Column::UpdateStatus.eq(UPDATE_PENDING))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        for attempt in &overdue {
            tracing::info!(unit = %attempt.unit_uuid, commit = %attempt.target_commit, "update timed out");
            // The alert rules see it the way they see a failure the unit reports itself.
            let state = serde_json::json!({
                pepeunit_protocol::device::UPDATE_FAILURE_KEY: {
                    "commit": attempt.target_commit,
                    "reason": detail,
                }
            });
            services
                .alerts()
                .observe_state(attempt.unit_uuid, state.to_string().as_bytes());
        }
        failed += overdue.len();
        if overdue.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
            return Ok(failed);
        }
    }
}

/// Checks for overdue updates every `interval` (a tenth of the timeout, between 1 s and a minute).
pub async fn run(services: Services) {
    let timeout = services.units().update_timeout_seconds;
    let interval = Duration::from_secs((timeout / 10).clamp(1, 60));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match fail_overdue(&services).await {
            Ok(0) => {}
            Ok(failed) => tracing::debug!(failed, "overdue updates failed"),
            Err(error) => tracing::warn!(%error, "checking update timeouts failed"),
        }
    }
}
