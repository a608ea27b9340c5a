//! Group commit of what units publish: values, state and logs.
//!
//! Connections hand each publish to one writer task and wait; the writer takes everything queued (up to a
//! batch), writes it in one transaction, and only then answers each waiting connection, which only then
//! acknowledges to the unit. So a PUBACK always means "committed", and under load thousands of values
//! share one commit. Within a batch a node's last value is written once, its history rows in one insert.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    Set,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::entities::{unit_node_values, unit_nodes};
use crate::error::Result;
use crate::services::Services;
use crate::services::units::data;
use crate::services::units::live::LiveEvent;
use crate::services::units::nodes::HistoryPolicy;

use super::acl::Sink;

/// Most writes in one transaction.
const BATCH: usize = 2048;
/// How often one node's history is trimmed to its policy.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// One publish to store.
#[derive(Debug)]
pub struct Item {
    pub unit: Uuid,
    pub sink: Sink,
    pub payload: Vec<u8>,
    pub at: DateTime<Utc>,
}

type Job = (Item, oneshot::Sender<bool>);

/// A value's text and when it arrived.
type Timed<'a> = (std::borrow::Cow<'a, str>, DateTime<Utc>);

/// The handle connections use.
#[derive(Clone)]
pub struct Ingestor {
    jobs: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Starts the writer task.
    pub fn start(services: Services) -> Self {
        let (jobs, rx) = mpsc::channel(BATCH * 4);
        tokio::spawn(run(services, rx));
        Self { jobs }
    }

    /// Queues `item` (waiting while the writer is full) and returns what answers `true` once it is
    /// committed, `false` if it could not be stored (the unit gets no acknowledgement and will retry).
    pub async fn submit(&self, item: Item) -> oneshot::Receiver<bool> {
        let (done, committed) = oneshot::channel();
        let _ = self.jobs.send((item, done)).await;
        committed
    }
}

async fn run(services: Services, mut rx: mpsc::Receiver<Job>) {
    let log_ttl = Duration::from_secs(services.units().log_ttl_seconds);
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    let mut live = Vec::new();
    let mut trimmed = HashMap::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let watched = services.live().watched();
        let written = write(
            services.db(),
            log_ttl,
            &batch,
            watched.then_some(&mut live),
            &mut trimmed,
        );
        let ok = match written.await {
            Ok(()) => {
                for event in live.drain(..) {
                    services.live().send(event);
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, items = batch.len(), "ingestion batch failed");
                false
            }
        };
        for (_, done) in batch.drain(..) {
            let _ = done.send(ok);
        }
    }
}

/// Writes one batch; fills `live` (when someone watches) with what to announce once it is committed.
async fn write(
    db: &DatabaseConnection,
    log_ttl: Duration,
    batch: &[Job],
    mut live: Option<&mut Vec<LiveEvent>>,
    trimmed: &mut HashMap<Uuid, Instant>,
) -> Result<()> {
    let txn = crate::db::begin_write(db).await?;
    // Values, grouped by node, in arrival order.
    let mut values: HashMap<Uuid, Vec<Timed<'_>>> = HashMap::new();
    for (item, _) in batch {
        match item.sink {
            Sink::Value(node) => {
                // Values are text in the API; bytes that are not UTF-8 are replaced, not refused.
                let text = String::from_utf8_lossy(&item.payload);
                if let Some(live) = live.as_deref_mut() {
                    live.push(LiveEvent::Value {
                        unit: item.unit,
                        node,
                        value: text.to_string(),
                        at: item.at,
                    });
                }
                values.entry(node).or_default().push((text, item.at));
            }
            Sink::State => match data::record_state(&txn, item.unit, &item.payload).await {
                Ok(()) => {
                    if let Some(live) = live.as_deref_mut() {
                        live.push(LiveEvent::State {
                            unit: item.unit,
                            state: String::from_utf8_lossy(&item.payload).into_owned(),
                        });
                    }
                }
                Err(error) => tracing::debug!(unit = %item.unit, %error, "state refused"),
            },
            Sink::Log => match data::record_logs(&txn, item.unit, &item.payload, log_ttl).await {
                Ok(entries) => {
                    if let Some(live) = live.as_deref_mut() {
                        live.extend(entries.into_iter().map(|e| LiveEvent::Log {
                            unit: item.unit,
                            level: e.level,
                            text: e.text,
                        }));
                    }
                }
                Err(error) => tracing::debug!(unit = %item.unit, %error, "log refused"),
            },
        }
    }
    if !values.is_empty() {
        let nodes = unit_nodes::Entity::find()
            .filter(unit_nodes::Column::Uuid.is_in(values.keys().copied()))
            .all(&txn)
            .await?;
        let mut history = Vec::new();
        let mut trims = Vec::new();
        for node in nodes {
            let Some(list) = values.get(&node.uuid) else {
                continue;
            };
            let Some((last, at)) = list.last() else {
                continue;
            };
            let at = *at;
            let policy = HistoryPolicy::of(&node);
            let uuid = node.uuid;
            let mut active = node.into_active_model();
            active.last_value = Set(Some(last.to_string()));
            active.last_value_at = Set(Some(at));
            active.updated_at = Set(at);
            active.update(&txn).await?;
            if policy == HistoryPolicy::LastValue {
                continue;
            }
            history.extend(
                list.iter()
                    .map(|(value, at)| unit_node_values::ActiveModel {
                        unit_node_uuid: Set(uuid),
                        value: Set(value.to_string()),
                        created_at: Set(*at),
                        ..Default::default()
                    }),
            );
            trims.push((uuid, policy, at));
        }
        if !history.is_empty() {
            for chunk in history.chunks(500) {
                unit_node_values::Entity::insert_many(chunk.to_vec())
                    .exec(&txn)
                    .await?;
            }
        }
        // Trimming is a range delete per node: at most once a second per node is plenty, and keeps a
        // busy node's batches to one insert.
        let now = Instant::now();
        for (node, policy, at) in trims {
            let due = trimmed
                .get(&node)
                .is_none_or(|last| now.duration_since(*last) >= TRIM_EVERY);
            if due {
                data::trim_history(&txn, node, policy, at).await?;
                trimmed.insert(node, now);
            }
        }
    }
    txn.commit().await?;
    Ok(())
}
