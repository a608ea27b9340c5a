//! What units report and what users send them: state, logs, variable values and their history.
//!
//! The `record_*` functions are the ingestion side (the broker calls them for what units publish); the
//! rest are reads and writes for the API. State and logs may reveal a device's network and internals, so
//! only the unit's creator and admins read them; values follow the unit's visibility.

use chrono::{DateTime, Duration, Utc};
use pepeunit_protocol::device::{UPDATE_FAILURE_KEY, UpdateFailure};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Order, Query},
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::InvalidValue;
use crate::entities::{unit_logs, unit_node_values, unit_nodes, units};
use crate::error::{Error, Result};
use crate::services::units::events::UnitEvent;
use crate::services::units::links::{may_write_input, visible_node};
use crate::services::units::live::LiveEvent;
use crate::services::units::nodes::{HistoryPolicy, NodeKind};
use crate::services::units::processing::Processing;
use crate::services::{Actor, Services, access};

/// Most bytes of one variable value.
pub const VALUE_LIMIT: usize = 64 * 1024;

/// Most rows one trim statement deletes: a trim never holds the write lock for long, so ingestion goes on
/// between the statements of a large one (a policy switched on a node with millions of rows).
pub const TRIM_BATCH: u64 = 5_000;

/// Stores `value` as the node's last value and, by its policy, in its history; trims (one bounded batch)
/// what the policy no longer keeps.
pub async fn record_value(
    db: &impl ConnectionTrait,
    node: &unit_nodes::Model,
    value: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let mut active = node.clone().into_active_model();
    active.last_value = Set(Some(value.to_owned()));
    active.last_value_at = Set(Some(at));
    active.updated_at = Set(at);
    active.update(db).await?;
    let policy = HistoryPolicy::of(node);
    if policy == HistoryPolicy::LastValue {
        return Ok(());
    }
    unit_node_values::ActiveModel {
        unit_node_uuid: Set(node.uuid),
        value: Set(value.to_owned()),
        created_at: Set(at),
        ..Default::default()
    }
    .insert(db)
    .await?;
    trim_history(db, node.uuid, policy, at).await?;
    Ok(())
}

/// Deletes at most [`TRIM_BATCH`] rows of the history `policy` no longer keeps, as of `at`, oldest
/// first; returns whether a full batch went (so more may remain). Served by the `(unit_node_uuid, id)`
/// and `(unit_node_uuid, created_at)` indexes, so its cost does not grow with the history kept.
pub async fn trim_history(
    db: &impl ConnectionTrait,
    node: Uuid,
    policy: HistoryPolicy,
    at: DateTime<Utc>,
) -> Result<bool> {
    let doomed = match policy {
        HistoryPolicy::LastN(n) => {
            let keep_from: Option<i64> = unit_node_values::Entity::find()
                .select_only()
                .column(unit_node_values::Column::Id)
                .filter(unit_node_values::Column::UnitNodeUuid.eq(node))
                .order_by_desc(unit_node_values::Column::Id)
                .offset(u64::from(n.saturating_sub(1)))
                .limit(1)
                .into_tuple()
                .one(db)
                .await?;
            let Some(oldest_kept) = keep_from else {
                return Ok(false);
            };
            unit_node_values::Column::Id.lt(oldest_kept)
        }
        HistoryPolicy::Window(seconds) => {
            unit_node_values::Column::CreatedAt.lt(at - Duration::seconds(i64::from(seconds)))
        }
        // Switching to the last value only stops new history; what was kept stays until the node goes.
        HistoryPolicy::LastValue => return Ok(false),
    };
    let batch = Query::select()
        .column(unit_node_values::Column::Id)
        .from(unit_node_values::Entity)
        .and_where(unit_node_values::Column::UnitNodeUuid.eq(node))
        .and_where(doomed)
        .order_by(unit_node_values::Column::Id, Order::Asc)
        .limit(TRIM_BATCH)
        .to_owned();
    let deleted = unit_node_values::Entity::delete_many()
        .filter(unit_node_values::Column::Id.in_subquery(batch))
        .exec(db)
        .await?
        .rows_affected;
    Ok(deleted >= TRIM_BATCH)
}

/// Deletes at most [`TRIM_BATCH`] of a unit's oldest log lines beyond the newest `keep`; returns whether
/// a full batch went.
pub async fn trim_logs(db: &impl ConnectionTrait, unit: Uuid, keep: u64) -> Result<bool> {
    let keep_from: Option<i64> = unit_logs::Entity::find()
        .select_only()
        .column(unit_logs::Column::Id)
        .filter(unit_logs::Column::UnitUuid.eq(unit))
        .order_by_desc(unit_logs::Column::Id)
        .offset(keep.saturating_sub(1))
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    let Some(oldest_kept) = keep_from else {
        return Ok(false);
    };
    let batch = Query::select()
        .column(unit_logs::Column::Id)
        .from(unit_logs::Entity)
        .and_where(unit_logs::Column::UnitUuid.eq(unit))
        .and_where(unit_logs::Column::Id.lt(oldest_kept))
        .order_by(unit_logs::Column::Id, Order::Asc)
        .limit(TRIM_BATCH)
        .to_owned();
    let deleted = unit_logs::Entity::delete_many()
        .filter(unit_logs::Column::Id.in_subquery(batch))
        .exec(db)
        .await?
        .rows_affected;
    Ok(deleted >= TRIM_BATCH)
}

/// Sets an input's value from the API. The broker publishes it to the unit.
pub async fn set_input_value(
    services: &Services,
    actor: &Actor,
    node: Uuid,
    value: &str,
) -> Result<unit_nodes::Model> {
    if value.len() > VALUE_LIMIT {
        return Err(Error::Validation(InvalidValue {
            field: "value",
            message: format!("must be at most {VALUE_LIMIT} bytes"),
        }));
    }
    let (node, unit) = visible_node(services, actor, node).await?;
    may_write_input(actor, &node, &unit)?;
    let at = Utc::now();
    record_value(services.db(), &node, value, at).await?;
    services.live().send(LiveEvent::Value {
        unit: unit.uuid,
        node: node.uuid,
        value: value.to_owned(),
        at,
    });
    services.unit_events().send(UnitEvent::InputSet {
        node: node.uuid,
        value: value.to_owned(),
    });
    unit_nodes::Entity::find_by_id(node.uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("unit_node"))
}

/// What the creator may change on a node.
#[derive(Debug, Clone, Default)]
pub struct NodeChange {
    pub is_rewritable_input: Option<bool>,
    pub history: Option<HistoryPolicy>,
    /// An output's processing, replacing what it had.
    pub processing: Option<Processing>,
}

/// Changes a node's settings; the unit's creator or an admin.
pub async fn update_node(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    change: NodeChange,
) -> Result<unit_nodes::Model> {
    let (node, unit) = visible_node(services, actor, uuid).await?;
    access::ensure_can_edit(actor, unit.creator_uuid)?;
    let node_row = node.clone();
    let mut active = node.into_active_model();
    if let Some(rewritable) = change.is_rewritable_input {
        active.is_rewritable_input = Set(rewritable);
    }
    if let Some(policy) = change.history {
        let bad = match policy {
            HistoryPolicy::LastN(n) => !(1..=10_000).contains(&n),
            HistoryPolicy::Window(s) => !(1..=366 * 86_400).contains(&s),
            HistoryPolicy::LastValue => false,
        };
        if bad {
            return Err(Error::Validation(InvalidValue {
                field: "history",
                message: "keep 1 to 10000 values or a window of up to a year".into(),
            }));
        }
        let (name, limit, window) = policy.columns();
        active.history_policy = Set(name.to_owned());
        active.history_limit = Set(limit);
        active.history_window_seconds = Set(window);
    }
    if let Some(processing) = change.processing {
        if NodeKind::of(&node_row) != NodeKind::Output {
            return Err(Error::Validation(InvalidValue {
                field: "processing",
                message: "only an output's values are processed".into(),
            }));
        }
        active.processing = Set(processing.validated()?.column()?);
    }
    active.updated_at = Set(Utc::now());
    Ok(active.update(services.db()).await?)
}

/// A node's history, newest first.
pub async fn history(
    services: &Services,
    actor: &Actor,
    node: Uuid,
    limit: u64,
) -> Result<Vec<unit_node_values::Model>> {
    visible_node(services, actor, node).await?;
    Ok(unit_node_values::Entity::find()
        .filter(unit_node_values::Column::UnitNodeUuid.eq(node))
        .order_by_desc(unit_node_values::Column::Id)
        .limit(limit.min(10_000))
        .all(services.db())
        .await?)
}

/// Stores a `state/pepeunit` payload as the unit's last state. Anything but a JSON object is refused.
pub async fn record_state(db: &impl ConnectionTrait, unit: Uuid, payload: &[u8]) -> Result<()> {
    let state: serde_json::Map<String, Value> = serde_json::from_slice(payload).map_err(|e| {
        Error::Validation(InvalidValue {
            field: "state",
            message: format!("is not a JSON object: {e}"),
        })
    })?;
    let Some(row) = units::Entity::find_by_id(unit).one(db).await? else {
        return Err(Error::NotFound("unit"));
    };
    let reported = state
        .get("pu_commit_version")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let failure = state
        .get(UPDATE_FAILURE_KEY)
        .and_then(|value| serde_json::from_value::<UpdateFailure>(value.clone()).ok());
    let now = Utc::now();
    let reached = reported.is_some() && reported == row.target_commit;
    let pending = row.update_status.as_deref() == Some(super::UPDATE_PENDING);
    let failed_target = failure
        .as_ref()
        .filter(|failure| Some(&failure.commit) == row.target_commit.as_ref() && !reached);
    let mut active = row.into_active_model();
    if reached && pending {
        active.update_status = Set(Some(super::UPDATE_DONE.to_owned()));
        active.update_status_at = Set(Some(now));
        if let Some(commit) = &reported {
            super::rollouts::finish_attempts(db, unit, commit, super::UPDATE_DONE, None).await?;
        }
    } else if let Some(failure) = failed_target.filter(|_| pending) {
        active.update_status = Set(Some(super::UPDATE_FAILED.to_owned()));
        active.update_status_at = Set(Some(now));
        let reason: String = failure.reason.chars().take(500).collect();
        super::rollouts::finish_attempts(
            db,
            unit,
            &failure.commit,
            super::UPDATE_FAILED,
            Some(&reason),
        )
        .await?;
    }
    active.reported_commit = Set(reported);
    active.last_state = Set(Some(Value::Object(state).to_string()));
    active.last_state_at = Set(Some(now));
    active.update(db).await?;
    Ok(())
}

/// One log line as a unit publishes it on `log/pepeunit`.
#[derive(Debug, Clone, Deserialize)]
pub struct LogEntry {
    pub level: String,
    pub text: String,
    pub create_datetime: Option<String>,
}

/// What became of a `log/pepeunit` payload.
#[derive(Debug, Default)]
pub struct LogsRecorded {
    /// The lines stored, in the order published.
    pub stored: Vec<LogEntry>,
    /// Lines over the quota (`max` of [`record_logs`]), not stored.
    pub refused: usize,
}

/// Stores a `log/pepeunit` payload (one entry or a list), each line kept for `ttl`: at most `max` lines
/// (the rest are refused and counted), and a line the unit already reported (same time, level and text,
/// as `log_sync` republishes the whole log) only once.
pub async fn record_logs(
    db: &impl ConnectionTrait,
    unit: Uuid,
    payload: &[u8],
    ttl: std::time::Duration,
    max: usize,
) -> Result<LogsRecorded> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Payload {
        One(LogEntry),
        Many(Vec<LogEntry>),
    }
    let mut entries = match serde_json::from_slice::<Payload>(payload) {
        Ok(Payload::One(entry)) => vec![entry],
        Ok(Payload::Many(entries)) => entries,
        Err(e) => {
            return Err(Error::Validation(InvalidValue {
                field: "log",
                message: format!("is not a log entry or a list of them: {e}"),
            }));
        }
    };
    let refused = entries.len().saturating_sub(max);
    entries.truncate(max);
    let now = Utc::now();
    let expires = now + Duration::from_std(ttl).map_err(Error::internal)?;
    // A line is known by its time (to the microsecond PostgreSQL keeps), level and text.
    type Key = (i64, String, String);
    // Lines without their own time are stamped now and are always new.
    let mut lines: Vec<(Key, bool, LogEntry)> = entries
        .into_iter()
        .map(|mut entry| {
            let reported = entry
                .create_datetime
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .filter(|t| *t <= now);
            let at = reported.unwrap_or(now);
            entry.level = entry.level.chars().take(16).collect();
            entry.text = entry.text.chars().take(4096).collect();
            let key = (
                at.timestamp_micros(),
                entry.level.clone(),
                entry.text.clone(),
            );
            (key, reported.is_some(), entry)
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let times = lines
        .iter()
        .filter(|(_, reported, _)| *reported)
        .map(|((at, _, _), _, _)| *at);
    if let (Some(first), Some(last)) = (times.clone().min(), times.max()) {
        let from = DateTime::from_timestamp_micros(first).unwrap_or(now);
        let to = DateTime::from_timestamp_micros(last).unwrap_or(now);
        // Served by (unit_uuid, created_at); bounded by what the unit may keep.
        let known: Vec<(DateTime<Utc>, String, String)> = unit_logs::Entity::find()
            .select_only()
            .columns([
                unit_logs::Column::CreatedAt,
                unit_logs::Column::Level,
                unit_logs::Column::Text,
            ])
            .filter(unit_logs::Column::UnitUuid.eq(unit))
            .filter(unit_logs::Column::CreatedAt.between(from, to))
            .into_tuple()
            .all(db)
            .await?;
        seen.extend(
            known
                .into_iter()
                .map(|(at, level, text)| (at.timestamp_micros(), level, text)),
        );
    }
    lines.retain(|(key, reported, _)| !reported || seen.insert(key.clone()));
    let rows: Vec<unit_logs::ActiveModel> = lines
        .iter()
        .map(|((micros, level, text), _, _)| unit_logs::ActiveModel {
            unit_uuid: Set(unit),
            level: Set(level.clone()),
            text: Set(text.clone()),
            created_at: Set(DateTime::from_timestamp_micros(*micros).unwrap_or(now)),
            expires_at: Set(expires),
            ..Default::default()
        })
        .collect();
    // Five columns a row: 1,000 rows stay far below SQLite's limit of 32,766 variables.
    for chunk in rows.chunks(1000) {
        unit_logs::Entity::insert_many(chunk.to_vec())
            .exec(db)
            .await?;
    }
    Ok(LogsRecorded {
        stored: lines.into_iter().map(|(_, _, entry)| entry).collect(),
        refused,
    })
}

/// Deletes expired log lines; returns how many.
pub async fn purge_expired_logs(services: &Services) -> Result<u64> {
    Ok(unit_logs::Entity::delete_many()
        .filter(unit_logs::Column::ExpiresAt.lt(Utc::now()))
        .exec(services.db())
        .await?
        .rows_affected)
}

/// Deletes expired log lines every ten minutes; reads already hide them, this only frees the space.
pub async fn run_log_purge(services: Services) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(600));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match purge_expired_logs(&services).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired unit logs deleted"),
            Err(error) => tracing::warn!(%error, "purging unit logs failed"),
        }
    }
}

/// A unit's unexpired log lines, newest first, with their total; the creator or an admin.
pub async fn logs(
    services: &Services,
    actor: &Actor,
    unit: Uuid,
    limit: u64,
    offset: u64,
) -> Result<(Vec<unit_logs::Model>, u64)> {
    let unit = access::find_visible::<units::Entity>(services.db(), actor, unit, "unit").await?;
    access::ensure_can_edit(actor, unit.creator_uuid)?;
    let select = unit_logs::Entity::find()
        .filter(unit_logs::Column::UnitUuid.eq(unit.uuid))
        .filter(unit_logs::Column::ExpiresAt.gt(Utc::now()));
    let total = select.clone().count(services.db()).await?;
    let rows = select
        .order_by_desc(unit_logs::Column::CreatedAt)
        .order_by_desc(unit_logs::Column::Id)
        .limit(limit.min(1000))
        .offset(offset)
        .all(services.db())
        .await?;
    Ok((rows, total))
}

/// Whether `actor` may read the unit's state, logs and state storage.
pub fn may_read_private_data(actor: &Actor, unit: &units::Model) -> bool {
    access::ensure_can_edit(actor, unit.creator_uuid).is_ok()
}
