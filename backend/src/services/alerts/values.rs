//! Every value of chosen variables to webhooks: a webhook channel lists variables (`setWebhookVariables`)
//! whose every stored value it is POSTed, signed like its alerts.
//!
//! Off the hot path and bounded: ingestion only appends the value to each interested webhook's queue in
//! memory (never waits, never touches the database); a worker per webhook POSTs the queue in batches of up
//! to [`BATCH`] values, in order. A queue holds at most [`QUEUE_LIMIT`] values: past that, new values are
//! **dropped and counted** (`valuesDropped`), not coalesced, because a receiver that asked for every value
//! wants the ones it gets to be real, consecutive samples, and the count tells it how many it missed. A
//! batch the receiver refuses is retried a few times with backoff, then dropped and counted too. Values are
//! not durable: a restart loses what was queued (alerts, which are, go through the outbox).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::deliver::DeliveryError;
use super::{ChannelKind, invalid, own_channel, user_actor};
use crate::entities::{alert_channels, alert_webhook_variables};
use crate::error::{Error, Result};
use crate::services::Services;
use crate::services::units::links::visible_node;

/// Most variables one webhook may receive every value of.
pub const MAX_VARIABLES: usize = 50;
/// Most values waiting for one webhook; past it new values are dropped and counted.
pub const QUEUE_LIMIT: usize = 1000;
/// Most values in one POST.
pub const BATCH: usize = 100;
/// Attempts at one batch before it is dropped.
const ATTEMPTS: u32 = 3;
/// How often the choices are checked again against what their owners may see.
const RECHECK: Duration = Duration::from_secs(60);

/// One stored value of a chosen variable.
#[derive(Debug, Clone)]
pub struct Sample {
    pub unit: Uuid,
    pub node: Uuid,
    pub value: String,
    pub at: DateTime<Utc>,
}

/// A sample with the names the receiver sees.
#[derive(Debug, Clone)]
pub struct NamedSample {
    pub sample: Sample,
    pub unit_name: String,
    pub variable: String,
}

/// One webhook's waiting values and its counters (since the server started).
pub struct HookQueue {
    channel: Uuid,
    samples: Mutex<VecDeque<Sample>>,
    notify: Notify,
    sent: AtomicU64,
    dropped: AtomicU64,
    /// Unit name and variable of each chosen node.
    names: Mutex<HashMap<Uuid, (String, String)>>,
}

impl HookQueue {
    pub(super) fn new(channel: Uuid) -> Self {
        Self {
            channel,
            samples: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            names: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn channel(&self) -> Uuid {
        self.channel
    }

    /// Appends a value, or drops and counts it when the queue is full; never waits.
    pub(super) fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() >= QUEUE_LIMIT {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        samples.push_back(sample);
        drop(samples);
        self.notify.notify_one();
    }

    /// Waits for values and takes up to [`BATCH`] of them, in order.
    async fn next_batch(&self) -> Vec<NamedSample> {
        loop {
            let notified = self.notify.notified();
            let batch: Vec<Sample> = {
                let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
                let n = samples.len().min(BATCH);
                samples.drain(..n).collect()
            };
            if !batch.is_empty() {
                let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
                return batch
                    .into_iter()
                    .map(|sample| {
                        let (unit_name, variable) =
                            names.get(&sample.node).cloned().unwrap_or_default();
                        NamedSample {
                            sample,
                            unit_name,
                            variable,
                        }
                    })
                    .collect();
            }
            notified.await;
        }
    }

    /// Values POSTed and values dropped since the server started.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// How values leave the server (the webhook client).
pub trait ValueTransport: Send + Sync + 'static {
    fn post_values<'a>(
        &'a self,
        services: &'a Services,
        channel: &'a alert_channels::Model,
        samples: &'a [NamedSample],
        dropped: u64,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<(), DeliveryError>> + Send + 'a>>;
}

/// The chosen variables' node uuids of a channel.
pub async fn variables(services: &Services, channel: Uuid) -> Result<Vec<Uuid>> {
    Ok(alert_webhook_variables::Entity::find()
        .filter(alert_webhook_variables::Column::ChannelUuid.eq(channel))
        .all(services.db())
        .await?
        .into_iter()
        .map(|row| row.node_uuid)
        .collect())
}

/// Replaces the variables whose every value the caller's webhook `channel` receives; each must be a
/// variable the caller may see. In force when this returns.
pub async fn set_variables(
    services: &Services,
    actor: &crate::services::Actor,
    channel: Uuid,
    nodes: Vec<Uuid>,
) -> Result<alert_channels::Model> {
    let channel = own_channel(services, actor, channel).await?;
    if ChannelKind::of(&channel) != Some(ChannelKind::Webhook) {
        return Err(invalid("uuid", "only a webhook receives values"));
    }
    let nodes: Vec<Uuid> = {
        let mut seen = HashSet::new();
        nodes.into_iter().filter(|n| seen.insert(*n)).collect()
    };
    if nodes.len() > MAX_VARIABLES {
        return Err(invalid(
            "nodeUuids",
            &format!("a webhook receives the values of at most {MAX_VARIABLES} variables"),
        ));
    }
    for node in &nodes {
        visible_node(services, actor, *node).await?;
    }
    let now = Utc::now();
    let txn = services.db().begin().await?;
    alert_webhook_variables::Entity::delete_many()
        .filter(alert_webhook_variables::Column::ChannelUuid.eq(channel.uuid))
        .exec(&txn)
        .await?;
    for node in nodes {
        alert_webhook_variables::ActiveModel {
            uuid: Set(Uuid::new_v4()),
            channel_uuid: Set(channel.uuid),
            node_uuid: Set(node),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
    }
    txn.commit().await?;
    reload(services).await?;
    services.alerts().wake_values();
    Ok(channel)
}

/// Rebuilds who receives which values from the database, keeping each webhook's queue and counters. A
/// choice its owner may no longer see is left out.
pub async fn reload(services: &Services) -> Result<()> {
    let rows = alert_webhook_variables::Entity::find()
        .all(services.db())
        .await?;
    let channel_ids: HashSet<Uuid> = rows.iter().map(|r| r.channel_uuid).collect();
    let channels: HashMap<Uuid, alert_channels::Model> = alert_channels::Entity::find()
        .filter(alert_channels::Column::Uuid.is_in(channel_ids))
        .all(services.db())
        .await?
        .into_iter()
        .map(|c| (c.uuid, c))
        .collect();
    let mut actors = HashMap::new();
    let mut by_node: HashMap<Uuid, Vec<Arc<HookQueue>>> = HashMap::new();
    let mut names: HashMap<Uuid, HashMap<Uuid, (String, String)>> = HashMap::new();
    let alerting = services.alerts();
    for row in rows {
        let Some(channel) = channels.get(&row.channel_uuid) else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(entry) = actors.entry(channel.user_uuid) {
            entry.insert(
                user_actor(services, channel.user_uuid)
                    .await?
                    .map(|(a, _)| a),
            );
        }
        let Some(Some(actor)) = actors.get(&channel.user_uuid) else {
            continue;
        };
        let (node, unit) = match visible_node(services, actor, row.node_uuid).await {
            Ok(found) => found,
            Err(Error::NotFound(_) | Error::Forbidden(_)) => continue,
            Err(other) => return Err(other),
        };
        let queue = alerting.hook_queue(channel.uuid);
        let variable = node
            .topic_name
            .strip_suffix("/pepeunit")
            .unwrap_or(&node.topic_name)
            .to_owned();
        names
            .entry(channel.uuid)
            .or_default()
            .insert(node.uuid, (unit.name.clone(), variable));
        by_node.entry(node.uuid).or_default().push(queue);
    }
    for (channel, names) in names {
        let queue = alerting.hook_queue(channel);
        *queue.names.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }
    alerting.set_hooks(by_node);
    Ok(())
}

/// POSTs the chosen values until the task is dropped: one sender per webhook with values to receive.
pub async fn run(services: Services, transport: Arc<dyn ValueTransport>) {
    let mut senders: HashMap<Uuid, JoinHandle<()>> = HashMap::new();
    loop {
        if let Err(error) = reload(&services).await {
            tracing::warn!(%error, "loading the webhooks' variables failed");
        }
        let queues = services.alerts().active_hook_queues();
        let active: HashSet<Uuid> = queues.iter().map(|q| q.channel).collect();
        senders.retain(|channel, task| {
            let keep = active.contains(channel) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for queue in queues {
            senders.entry(queue.channel).or_insert_with(|| {
                tokio::spawn(send(services.clone(), transport.clone(), queue.clone()))
            });
        }
        tokio::select! {
            () = services.alerts().hooks_notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Sends one webhook's queue in batches, retrying a refused batch a few times before dropping it.
async fn send(services: Services, transport: Arc<dyn ValueTransport>, queue: Arc<HookQueue>) {
    loop {
        let batch = queue.next_batch().await;
        let channel = match alert_channels::Entity::find_by_id(queue.channel)
            .one(services.db())
            .await
        {
            Ok(Some(channel)) => channel,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "loading a webhook failed; its values are dropped");
                queue
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                continue;
            }
        };
        let mut attempt = 0;
        loop {
            let dropped = queue.dropped.load(Ordering::Relaxed);
            match transport
                .post_values(&services, &channel, &batch, dropped)
                .await
            {
                Ok(()) => {
                    queue.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    let permanent = matches!(error, DeliveryError::Permanent(_));
                    if permanent || attempt >= ATTEMPTS {
                        tracing::info!(channel = %channel.uuid, ?error, values = batch.len(), "webhook values dropped");
                        queue
                            .dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
            }
        }
    }
}
