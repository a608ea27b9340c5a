//! A variable's history as CSV: exported page by page (any size, constant memory), imported all or nothing.
//!
//! The file is `time,value` with a header line; `time` is RFC 3339 in UTC with as many fractional digits as
//! the stored time has, so export → import gives back the same samples. Rows are in the order they were
//! stored.

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::Stream;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use crate::domain::InvalidValue;
use crate::entities::{unit_node_values, unit_nodes};
use crate::error::{Error, Result};
use crate::services::units::data;
use crate::services::units::links::visible_node;
use crate::services::units::nodes::HistoryPolicy;
use crate::services::{Actor, Services, access};

/// Rows read per page of an export.
const PAGE: u64 = 5_000;
/// Most rows one import may hold.
pub const MAX_IMPORT_ROWS: usize = 100_000;
/// Most problems one refused import lists.
const MAX_PROBLEMS: usize = 20;
/// Rows inserted per statement (three columns each).
const INSERT_BATCH: usize = 2_000;

fn line(at: DateTime<Utc>, value: &str) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record([
            at.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_str(),
            value,
        ])
        .map_err(Error::internal)?;
    writer.into_inner().map_err(Error::internal)
}

/// The history of `node` as CSV, from `from` (inclusive) to `to` (exclusive) when given. The caller must
/// be allowed to see the node; the rows are read a page at a time as the client takes them.
pub async fn export(
    services: &Services,
    actor: &Actor,
    node: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<impl Stream<Item = Result<Vec<u8>>> + Send + 'static> {
    visible_node(services, actor, node).await?;
    struct Cursor {
        db: DatabaseConnection,
        after: Option<i64>,
        header: bool,
        done: bool,
    }
    let start = Cursor {
        db: services.db().clone(),
        after: None,
        header: true,
        done: false,
    };
    Ok(futures_util::stream::unfold(
        start,
        move |mut cursor| async move {
            if cursor.done {
                return None;
            }
            if cursor.header {
                cursor.header = false;
                return Some((Ok(b"time,value\n".to_vec()), cursor));
            }
            let mut select = unit_node_values::Entity::find()
                .filter(unit_node_values::Column::UnitNodeUuid.eq(node))
                .order_by_asc(unit_node_values::Column::Id)
                .limit(PAGE);
            if let Some(after) = cursor.after {
                select = select.filter(unit_node_values::Column::Id.gt(after));
            }
            if let Some(from) = from {
                select = select.filter(unit_node_values::Column::CreatedAt.gte(from));
            }
            if let Some(to) = to {
                select = select.filter(unit_node_values::Column::CreatedAt.lt(to));
            }
            let rows = match select.all(&cursor.db).await {
                Ok(rows) => rows,
                Err(error) => {
                    cursor.done = true;
                    return Some((Err(error.into()), cursor));
                }
            };
            if rows.len() < PAGE as usize {
                cursor.done = true;
            }
            cursor.after = rows.last().map(|r| r.id);
            let mut out = Vec::new();
            for row in rows {
                match line(row.created_at, &row.value) {
                    Ok(bytes) => out.extend(bytes),
                    Err(error) => {
                        cursor.done = true;
                        return Some((Err(error), cursor));
                    }
                }
            }
            Some((Ok(out), cursor))
        },
    ))
}

/// One row of an import.
struct Sample {
    at: DateTime<Utc>,
    value: String,
}

/// Reads every row of `body`; all its problems (up to [`MAX_PROBLEMS`]), by line, otherwise.
fn parse(body: &[u8], value_max_bytes: usize) -> Result<Vec<Sample>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body);
    let refuse = |message: String| {
        Error::Validation(InvalidValue {
            field: "csv",
            message,
        })
    };
    let header = reader
        .headers()
        .map_err(|e| refuse(format!("line 1: {e}")))?
        .clone();
    if header.len() != 2 || &header[0] != "time" || &header[1] != "value" {
        return Err(refuse("line 1: the header must be `time,value`".to_owned()));
    }
    let now = Utc::now();
    let mut samples = Vec::new();
    let mut problems = Vec::new();
    for (index, record) in reader.records().enumerate() {
        // The header is line 1; a record's own position is used when it has one (quoted newlines).
        let line = index + 2;
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                problems.push(format!("line {line}: {error}"));
                if problems.len() >= MAX_PROBLEMS {
                    break;
                }
                continue;
            }
        };
        let line = record.position().map_or(line, |p| p.line() as usize);
        if samples.len() >= MAX_IMPORT_ROWS {
            return Err(refuse(format!(
                "more than {MAX_IMPORT_ROWS} rows; split the file"
            )));
        }
        let at = match DateTime::parse_from_rfc3339(&record[0]) {
            Ok(at) => at.with_timezone(&Utc),
            Err(_) => {
                problems.push(format!(
                    "line {line}: time {:?} is not RFC 3339",
                    &record[0]
                ));
                continue;
            }
        };
        if at > now + chrono::Duration::seconds(60) {
            problems.push(format!("line {line}: time {at} is in the future"));
            continue;
        }
        if record[1].len() > value_max_bytes {
            problems.push(format!(
                "line {line}: the value is longer than {value_max_bytes} bytes"
            ));
            continue;
        }
        samples.push(Sample {
            at,
            value: record[1].to_owned(),
        });
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    if !problems.is_empty() {
        return Err(refuse(problems.join("; ")));
    }
    if samples.is_empty() {
        return Err(refuse("the file holds no rows".to_owned()));
    }
    Ok(samples)
}

/// Adds the samples of a CSV file to `node`'s history, all or nothing; the number added. The node's
/// history policy then applies (what it does not keep is trimmed), and the newest sample becomes the
/// last value if it is newer than the one there.
pub async fn import(services: &Services, actor: &Actor, node: Uuid, body: &[u8]) -> Result<usize> {
    let (node, unit) = visible_node(services, actor, node).await?;
    access::ensure_can_edit(actor, unit.creator_uuid)?;
    let policy = HistoryPolicy::of(&node);
    if policy == HistoryPolicy::LastValue {
        return Err(Error::Validation(InvalidValue {
            field: "csv",
            message: "this variable keeps no history (LAST_VALUE): choose LAST_N or WINDOW first"
                .into(),
        }));
    }
    let samples = parse(body, services.units().value_max_bytes)?;
    let count = samples.len();
    let newest = samples
        .iter()
        .max_by_key(|s| s.at)
        .map(|s| (s.at, s.value.clone()));
    let txn = services.db().begin().await?;
    for chunk in samples.chunks(INSERT_BATCH) {
        unit_node_values::Entity::insert_many(chunk.iter().map(|s| {
            unit_node_values::ActiveModel {
                unit_node_uuid: Set(node.uuid),
                value: Set(s.value.clone()),
                created_at: Set(s.at),
                ..Default::default()
            }
        }))
        .exec(&txn)
        .await?;
    }
    if let Some((at, value)) = newest
        && node.last_value_at.is_none_or(|last| at > last)
    {
        let mut active = unit_nodes::Entity::find_by_id(node.uuid)
            .one(&txn)
            .await?
            .ok_or(Error::NotFound("unit_node"))?
            .into_active_model();
        active.last_value = Set(Some(value));
        active.last_value_at = Set(Some(at));
        active.update(&txn).await?;
    }
    txn.commit().await?;
    // Bounded steps, as the ingestion trimmer takes them.
    while data::trim_history(services.db(), node.uuid, policy, Utc::now()).await? {}
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn problems_are_listed_by_line() {
        let body = b"time,value\n2026-11-28T06:00:00Z,1\nyesterday,2\n2026-11-28T06:00:01Z,\"x\"\n2999-01-01T00:00:00Z,3\n";
        let Err(Error::Validation(invalid)) = parse(body, 100) else {
            panic!("refused")
        };
        assert!(
            invalid.message.contains("line 3: time \"yesterday\""),
            "{}",
            invalid.message
        );
        assert!(
            invalid.message.contains("line 5: time"),
            "{}",
            invalid.message
        );
        assert!(!invalid.message.contains("line 2"), "{}", invalid.message);
        assert!(parse(b"when,what\n", 100).is_err());
        assert!(parse(b"time,value\n", 100).is_err());
        assert!(parse(b"time,value\n2026-11-28T06:00:00Z,12345\n", 4).is_err());
    }

    proptest! {
        /// What export writes, import reads back exactly: any text, any time to the microsecond.
        #[test]
        fn a_written_line_reads_back(value in "\\PC{0,40}|[,\"\\n\\r ]{0,8}", micros in 0i64..1_700_000_000_000_000) {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let mut body = b"time,value\n".to_vec();
            body.extend(line(at, &value).unwrap());
            let samples = parse(&body, 1 << 20).unwrap();
            prop_assert_eq!(samples.len(), 1);
            prop_assert_eq!(samples[0].at, at);
            prop_assert_eq!(&samples[0].value, &value);
        }

        /// Any bytes are rows or a validation error, never a panic.
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body, 1000);
        }
    }
}
