//! The database part of a backup, engine-neutral: one JSON-lines file per table, read and written through
//! the sea-orm entities, so the same file restores into SQLite or PostgreSQL.
//!
//! A file's first line names the table and its columns; each further line is one row as a JSON array in
//! that column order, with uuids and timestamps (RFC 3339, UTC, to the nanosecond) as strings. Values are
//! typed by the entity's column, not by the engine's storage, so an SQLite `INTEGER` boolean and a
//! PostgreSQL `boolean` give the same line. A column missing from an older backup is left to its default.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use sea_orm::sea_query::{ColumnType, Value};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    IdenStatic, Iterable, ModelTrait, PaginatorTrait, PrimaryKeyToColumn, QueryOrder,
};
use serde::{Deserialize, Serialize};

use super::BackupError;
use crate::entities::{
    alert_channels, alert_deliveries, alert_rules, alert_webhook_variables, alerts, api_tokens,
    board_items, boards, federation_followers, federation_keys, federation_peers,
    federation_remote_links, federation_remote_outputs, federation_remote_units,
    federation_unit_blocks, instance_settings, permissions, repo_units, rollouts, unit_logs,
    unit_node_aggregates, unit_node_edges, unit_node_rejections, unit_node_values,
    unit_node_window_samples, unit_nodes, units, update_attempts, users,
};

/// Rows inserted per statement: well under SQLite's and PostgreSQL's bound-parameter limits for the widest
/// table (about 20 columns).
const BATCH: usize = 500;

/// Every table a backup holds, parents before children, so rows insert in this order without breaking a
/// foreign key (and delete in the reverse order). The federation tables keep the instance's key (its
/// identity to peers), the peerings and the mirrors, so a restored instance is still the one its peers know.
pub const TABLES: &[&str] = &[
    "users",
    "instance_settings",
    "repo_units",
    "units",
    "unit_nodes",
    "unit_node_edges",
    "permissions",
    "rollouts",
    "update_attempts",
    "unit_logs",
    "unit_node_values",
    "unit_node_aggregates",
    "unit_node_window_samples",
    "unit_node_rejections",
    "federation_keys",
    "federation_peers",
    "federation_followers",
    "federation_remote_units",
    "federation_remote_outputs",
    "federation_remote_links",
    "federation_unit_blocks",
    "alert_channels",
    "alert_rules",
    "alerts",
    "alert_deliveries",
    "alert_webhook_variables",
    "boards",
    "board_items",
    "api_tokens",
];

/// Tables whose primary key is a PostgreSQL sequence that must move past the restored ids.
const SERIAL_TABLES: &[&str] = &[
    "update_attempts",
    "unit_logs",
    "unit_node_values",
    "unit_node_window_samples",
    "alert_deliveries",
    "board_items",
];

/// The first line of a table file.
#[derive(Serialize, Deserialize)]
struct Header {
    table: String,
    columns: Vec<String>,
}

/// Calls `$body` with `$entity` bound to the entity module of `$table` (one of [`TABLES`]).
macro_rules! with_entity {
    ($table:expr, $e:ident => $body:expr) => {
        match $table {
            "users" => {
                type $e = users::Entity;
                $body
            }
            "instance_settings" => {
                type $e = instance_settings::Entity;
                $body
            }
            "repo_units" => {
                type $e = repo_units::Entity;
                $body
            }
            "units" => {
                type $e = units::Entity;
                $body
            }
            "unit_nodes" => {
                type $e = unit_nodes::Entity;
                $body
            }
            "unit_node_edges" => {
                type $e = unit_node_edges::Entity;
                $body
            }
            "permissions" => {
                type $e = permissions::Entity;
                $body
            }
            "rollouts" => {
                type $e = rollouts::Entity;
                $body
            }
            "update_attempts" => {
                type $e = update_attempts::Entity;
                $body
            }
            "unit_logs" => {
                type $e = unit_logs::Entity;
                $body
            }
            "unit_node_values" => {
                type $e = unit_node_values::Entity;
                $body
            }
            "unit_node_aggregates" => {
                type $e = unit_node_aggregates::Entity;
                $body
            }
            "unit_node_window_samples" => {
                type $e = unit_node_window_samples::Entity;
                $body
            }
            "unit_node_rejections" => {
                type $e = unit_node_rejections::Entity;
                $body
            }
            "api_tokens" => {
                type $e = api_tokens::Entity;
                $body
            }
            "federation_keys" => {
                type $e = federation_keys::Entity;
                $body
            }
            "federation_peers" => {
                type $e = federation_peers::Entity;
                $body
            }
            "federation_followers" => {
                type $e = federation_followers::Entity;
                $body
            }
            "federation_unit_blocks" => {
                type $e = federation_unit_blocks::Entity;
                $body
            }
            "federation_remote_units" => {
                type $e = federation_remote_units::Entity;
                $body
            }
            "federation_remote_outputs" => {
                type $e = federation_remote_outputs::Entity;
                $body
            }
            "federation_remote_links" => {
                type $e = federation_remote_links::Entity;
                $body
            }
            "alert_channels" => {
                type $e = alert_channels::Entity;
                $body
            }
            "alert_rules" => {
                type $e = alert_rules::Entity;
                $body
            }
            "alerts" => {
                type $e = alerts::Entity;
                $body
            }
            "alert_deliveries" => {
                type $e = alert_deliveries::Entity;
                $body
            }
            "alert_webhook_variables" => {
                type $e = alert_webhook_variables::Entity;
                $body
            }
            "boards" => {
                type $e = boards::Entity;
                $body
            }
            "board_items" => {
                type $e = board_items::Entity;
                $body
            }
            other => Err(BackupError::Invalid(format!("unknown table {other}"))),
        }
    };
}

/// Writes `table` as read in `txn` to `path`; returns the number of rows.
pub async fn dump(txn: &DatabaseTransaction, table: &str, path: &Path) -> Result<u64, BackupError> {
    with_entity!(table, E => dump_entity::<E>(txn, table, path).await)
}

/// Inserts the rows of the table file at `path` in `txn`; returns the number of rows.
pub async fn load(txn: &DatabaseTransaction, table: &str, path: &Path) -> Result<u64, BackupError> {
    with_entity!(table, E => load_entity::<E>(txn, table, path).await)
}

/// The number of rows of `table`.
pub async fn count<C: ConnectionTrait>(db: &C, table: &str) -> Result<u64, BackupError> {
    with_entity!(table, E => Ok(E::find().count(db).await?))
}

/// Deletes every row of `table`.
pub async fn clear(txn: &DatabaseTransaction, table: &str) -> Result<(), BackupError> {
    with_entity!(table, E => {
        E::delete_many().exec(txn).await?;
        Ok(())
    })
}

/// Moves PostgreSQL's sequences past the ids restored explicitly, so the next insert does not collide.
/// SQLite's AUTOINCREMENT already follows the largest id inserted.
pub async fn fix_sequences(txn: &DatabaseTransaction) -> Result<(), BackupError> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for table in SERIAL_TABLES {
        txn.execute_unprepared(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
             COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        ))
        .await?;
    }
    Ok(())
}

async fn dump_entity<E>(
    txn: &DatabaseTransaction,
    table: &str,
    path: &Path,
) -> Result<u64, BackupError>
where
    E: EntityTrait,
    E::Model: Send + Sync,
{
    let columns: Vec<E::Column> = E::Column::iter().collect();
    let mut out = BufWriter::new(File::create(path)?);
    let header = Header {
        table: table.to_owned(),
        columns: columns.iter().map(|c| c.as_str().to_owned()).collect(),
    };
    serde_json::to_writer(&mut out, &header)?;
    out.write_all(b"\n")?;
    let mut query = E::find();
    // Primary-key order: the same database gives the same file.
    for key in E::PrimaryKey::iter() {
        query = query.order_by_asc(key.into_column());
    }
    let mut rows = Box::pin(query.stream(txn).await?);
    let mut count = 0u64;
    let mut line = Vec::with_capacity(columns.len());
    while let Some(model) = rows.try_next().await? {
        line.clear();
        for column in &columns {
            line.push(to_json(model.get(*column)).map_err(|kind| {
                BackupError::Invalid(format!(
                    "{table}.{}: values of type {kind} cannot be backed up",
                    column.as_str()
                ))
            })?);
        }
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        count += 1;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(count)
}

async fn load_entity<E>(
    txn: &DatabaseTransaction,
    table: &str,
    path: &Path,
) -> Result<u64, BackupError>
where
    E: EntityTrait,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    let bad = |why: String| BackupError::Invalid(format!("{table}: {why}"));
    let mut lines = BufReader::new(File::open(path)?).lines();
    let header: Header = match lines.next() {
        Some(line) => serde_json::from_str(&line?)?,
        None => return Err(bad("the table file is empty".into())),
    };
    if header.table != table {
        return Err(bad(format!("the file holds table {}", header.table)));
    }
    let columns = header
        .columns
        .iter()
        .map(|name| {
            E::Column::iter()
                .find(|c| c.as_str() == name)
                .ok_or_else(|| bad(format!("column {name} is unknown to this version")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut count = 0u64;
    for line in lines {
        let values: Vec<serde_json::Value> = serde_json::from_str(&line?)?;
        if values.len() != columns.len() {
            return Err(bad(format!(
                "row {} has the wrong number of values",
                count + 1
            )));
        }
        let mut row = <E::ActiveModel as ActiveModelTrait>::default();
        for (column, value) in columns.iter().zip(values) {
            from_json(column.def().get_column_type(), value)
                .and_then(|v| row.try_set(*column, v).map_err(|e| e.to_string()))
                .map_err(|why| bad(format!("row {}, {}: {why}", count + 1, column.as_str())))?;
        }
        batch.push(row);
        count += 1;
        if batch.len() == BATCH {
            E::insert_many(std::mem::take(&mut batch))
                .exec_without_returning(txn)
                .await?;
        }
    }
    if !batch.is_empty() {
        E::insert_many(batch).exec_without_returning(txn).await?;
    }
    Ok(count)
}

/// A column value as JSON; `Err` names a type this format does not carry (none of today's columns).
fn to_json(value: Value) -> Result<serde_json::Value, &'static str> {
    use serde_json::Value as J;
    let json = match value {
        Value::Bool(v) => v.map(J::from),
        Value::TinyInt(v) => v.map(J::from),
        Value::SmallInt(v) => v.map(J::from),
        Value::Int(v) => v.map(J::from),
        Value::BigInt(v) => v.map(J::from),
        Value::TinyUnsigned(v) => v.map(J::from),
        Value::SmallUnsigned(v) => v.map(J::from),
        Value::Unsigned(v) => v.map(J::from),
        Value::BigUnsigned(v) => v.map(J::from),
        Value::Float(v) => match v {
            Some(f) => Some(
                serde_json::Number::from_f64(f64::from(f))
                    .map(J::Number)
                    .ok_or("non-finite float")?,
            ),
            None => None,
        },
        Value::Double(v) => match v {
            Some(f) => Some(
                serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .ok_or("non-finite float")?,
            ),
            None => None,
        },
        Value::String(v) => v.map(J::String),
        Value::Uuid(v) => v.map(|u| J::String(u.to_string())),
        Value::ChronoDateTimeUtc(v) => {
            v.map(|t| J::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
        }
        Value::ChronoDateTimeWithTimeZone(v) => v.map(|t| {
            J::String(
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            )
        }),
        Value::Json(v) => v.map(|j| *j),
        _ => return Err("other"),
    };
    Ok(json.unwrap_or(J::Null))
}

/// The value for a column of type `column_type` from its JSON form.
fn from_json(column_type: &ColumnType, json: serde_json::Value) -> Result<Value, String> {
    if let ColumnType::Json | ColumnType::JsonBinary = column_type {
        return Ok(Value::Json((!json.is_null()).then(|| Box::new(json))));
    }
    let null = json.is_null();
    let wrong = || format!("{json} does not fit a {column_type:?} column");
    let text = || json.as_str().map(str::to_owned).ok_or_else(wrong);
    let int = || json.as_i64().ok_or_else(wrong);
    let value = match column_type {
        ColumnType::Boolean => Value::Bool(if null {
            None
        } else {
            Some(json.as_bool().ok_or_else(wrong)?)
        }),
        ColumnType::TinyInteger | ColumnType::SmallInteger | ColumnType::Integer => {
            Value::Int(if null {
                None
            } else {
                Some(i32::try_from(int()?).map_err(|_| wrong())?)
            })
        }
        ColumnType::BigInteger => Value::BigInt(if null { None } else { Some(int()?) }),
        ColumnType::Double => Value::Double(if null {
            None
        } else {
            Some(json.as_f64().ok_or_else(wrong)?)
        }),
        ColumnType::Uuid => Value::Uuid(if null {
            None
        } else {
            Some(text()?.parse().map_err(|_| wrong())?)
        }),
        ColumnType::TimestampWithTimeZone | ColumnType::Timestamp | ColumnType::DateTime => {
            Value::ChronoDateTimeUtc(if null {
                None
            } else {
                Some(
                    DateTime::parse_from_rfc3339(&text()?)
                        .map_err(|_| wrong())?
                        .with_timezone(&Utc),
                )
            })
        }
        ColumnType::Char(_)
        | ColumnType::String(_)
        | ColumnType::Text
        | ColumnType::Enum { .. } => Value::String(if null { None } else { Some(text()?) }),
        other => return Err(format!("columns of type {other:?} are not supported")),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pepeunit_migrations::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, Database, Statement};

    use super::TABLES;

    /// Tables a backup leaves out on purpose: the migrator's own bookkeeping, Telegram link codes and the
    /// tokens of e-mail links (single-use and short-lived: a restore must not bring one back).
    const NOT_BACKED_UP: &[&str] = &["seaql_migrations", "telegram_link_codes", "mail_tokens"];

    /// A table added by a migration but not to [`TABLES`] would silently be missing from every backup.
    #[tokio::test]
    async fn every_table_the_migrations_create_is_backed_up() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            ))
            .await
            .unwrap();
        let mut created: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String>("", "name").unwrap())
            .filter(|name| !NOT_BACKED_UP.contains(&name.as_str()))
            .collect();
        created.sort();
        let mut backed_up: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        backed_up.sort();
        assert_eq!(created, backed_up);
    }
}
