//! Group commit of what units publish: values, state and logs.
//!
//! Connections hand each publish to one writer task and wait; the writer takes a batch, writes it in one
//! transaction, and only then answers each waiting connection, which only then acknowledges to the unit.
//! So a PUBACK always means "committed", and under load thousands of values share one commit.
//!
//! Fairness: each unit has its own queue with a byte budget (`ingest_unit_backlog_bytes`). A unit over its
//! budget waits in [`Ingestor::submit`], which stalls only that unit's connection; the writer fills each
//! batch round-robin, a few publishes per unit per turn, so one unit's backlog never delays another's
//! commit. Within a batch the last values are one statement, the history one insert per 2,000 rows;
//! trimming history and logs to their limits runs beside it in bounded steps ([`run_trims`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sea_orm::sea_query::Value;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, Set,
    Statement,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use crate::entities::{unit_node_values, unit_nodes};
use crate::error::Result;
use crate::services::units::data;
use crate::services::units::live::LiveEvent;
use crate::services::units::nodes::HistoryPolicy;
use crate::services::{Services, UnitSettings};

use super::acl::Sink;

/// Most publishes in one transaction.
const BATCH: usize = 2048;
/// Most payload bytes in one transaction: bounds how long one commit (and so everyone's PUBACK) takes.
const BATCH_BYTES: usize = 1024 * 1024;
/// Most publishes of one unit taken per round-robin turn.
const TURN: usize = 64;
/// What a queued publish costs of its unit's budget beyond its payload (the item and its channel).
const ITEM_OVERHEAD: usize = 256;
/// How often trims run; each node or unit at most once per round.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Most trim statements in one round: the rest waits for the next, so ingestion always gets the lock.
const TRIMS_PER_ROUND: usize = 200;
/// Rows a statement may bind: SQLite allows 32,766 variables, PostgreSQL 65,535.
const VARIABLES: usize = 30_000;
/// A limit is logged at most once per this interval (it is counted every time).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// One publish to store.
#[derive(Debug)]
pub struct Item {
    pub unit: Uuid,
    pub sink: Sink,
    pub payload: Vec<u8>,
    pub at: DateTime<Utc>,
}

/// A queued publish, its answer, and the share of its unit's budget it holds until answered.
struct Job {
    item: Item,
    done: oneshot::Sender<bool>,
    _budget: OwnedSemaphorePermit,
}

/// Which limit refused or held back a publish, for `/metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

/// Times each ingestion limit was hit: `unit_backlog` (a unit waited for its queue), `value_size` (a value
/// refused), `log_entries` and `log_rate` (log lines refused).
pub static LIMITS_HIT: LazyLock<Family<LimitLabels, Counter>> = LazyLock::new(Family::default);

/// A unit's waiting publishes.
struct UnitQueue {
    jobs: VecDeque<Job>,
    budget: Arc<Semaphore>,
    /// Whether the unit is in the round-robin `turns`.
    scheduled: bool,
}

#[derive(Default)]
struct Queues {
    units: HashMap<Uuid, UnitQueue>,
    /// Units with queued publishes, in the order they get their next turn.
    turns: VecDeque<Uuid>,
    /// Set by [`Ingestor::stop`]: nothing more is queued, and the writer ends once the queues are empty.
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Notify,
    /// The writer and the trimmer, for [`Ingestor::stop`].
    tasks: Mutex<Option<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)>>,
    settings: UnitSettings,
    /// When each limit was last logged.
    logged: Mutex<HashMap<&'static str, Instant>>,
}

impl Shared {
    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a hit of `limit`, and logs it if it was not logged in the last interval.
    fn hit(&self, limit: &'static str, unit: Uuid, count: u64) {
        LIMITS_HIT
            .get_or_create(&LimitLabels { limit })
            .inc_by(count);
        let mut logged = self
            .logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if logged
            .get(limit)
            .is_none_or(|last| now.duration_since(*last) >= LOG_EVERY)
        {
            logged.insert(limit, now);
            tracing::warn!(%unit, limit, count, "unit hit an ingestion limit (logged once a minute)");
        }
    }
}

/// The handle connections use.
#[derive(Clone)]
pub struct Ingestor {
    shared: Arc<Shared>,
}

impl Ingestor {
    /// Starts the writer and trimmer tasks.
    pub fn start(services: Services) -> Self {
        let shared = Arc::new(Shared {
            queues: Mutex::default(),
            ready: Notify::new(),
            tasks: Mutex::default(),
            settings: services.units().clone(),
            logged: Mutex::default(),
        });
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let writer = tokio::spawn(run(
            services.clone(),
            shared.clone(),
            dirty.clone(),
            gate.clone(),
        ));
        let trimmer = tokio::spawn(run_trims(services, dirty, gate));
        *shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((writer, trimmer));
        Self { shared }
    }

    /// Stops taking publishes and waits, until `deadline` at most, for those already queued to be
    /// committed and answered; the writer and the trimmer then end. For a graceful stop: the database
    /// may close after it without a batch failing half-way.
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        self.shared.queues().closed = true;
        self.shared.ready.notify_one();
        let tasks = self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((writer, trimmer)) = tasks else {
            return;
        };
        // A trim holds the write gate for one bounded statement; the queued batches come first.
        trimmer.abort();
        let writer_abort = writer.abort_handle();
        if tokio::time::timeout_at(deadline, writer).await.is_err() {
            tracing::warn!("ingestion still writing at the end of the stop's wait");
            writer_abort.abort();
        }
    }

    /// Whether `item` is within the size a stored value may have; [`Self::submit`] refuses (and counts)
    /// one that is not, and nothing routes it either.
    pub fn fits(&self, item: &Item) -> bool {
        !matches!(item.sink, Sink::Value(_))
            || item.payload.len() <= self.shared.settings.value_max_bytes
    }

    /// Queues `item` and returns what answers `true` once it is committed, `false` if it could not be
    /// stored (the unit gets no acknowledgement). Waits while the unit's queue is over its budget, which
    /// holds back that unit's connection only.
    pub async fn submit(&self, item: Item) -> oneshot::Receiver<bool> {
        let (done, committed) = oneshot::channel();
        let settings = &self.shared.settings;
        if !self.fits(&item) {
            self.shared.hit("value_size", item.unit, 1);
            let _ = done.send(false);
            return committed;
        }
        let budget = settings.backlog_bytes.max(1);
        let cost = (item.payload.len() + ITEM_OVERHEAD).min(budget);
        let semaphore = {
            let mut queues = self.shared.queues();
            queues
                .units
                .entry(item.unit)
                .or_insert_with(|| UnitQueue {
                    jobs: VecDeque::new(),
                    budget: Arc::new(Semaphore::new(budget)),
                    scheduled: false,
                })
                .budget
                .clone()
        };
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let permit = match semaphore.clone().try_acquire_many_owned(cost) {
            Ok(permit) => permit,
            Err(_) => {
                self.shared.hit("unit_backlog", item.unit, 1);
                match semaphore.clone().acquire_many_owned(cost).await {
                    Ok(permit) => permit,
                    // The budget is never closed; if it were, the publish is simply not stored.
                    Err(_) => return committed,
                }
            }
        };
        let unit = item.unit;
        let job = Job {
            item,
            done,
            _budget: permit,
        };
        {
            let mut queues = self.shared.queues();
            let Queues {
                units,
                turns,
                closed,
            } = &mut *queues;
            if *closed {
                // Stopping: not stored, so not acknowledged (the unit sends it again to the next server).
                return committed;
            }
            let queue = units.entry(unit).or_insert_with(|| UnitQueue {
                jobs: VecDeque::new(),
                budget: semaphore,
                scheduled: false,
            });
            queue.jobs.push_back(job);
            if !queue.scheduled {
                queue.scheduled = true;
                turns.push_back(unit);
            }
        }
        self.shared.ready.notify_one();
        committed
    }
}

/// Takes the next batch: units in turn, up to [`TURN`] publishes each, until the batch is full. False
/// when there is none and there will be no more (stopped).
fn next_batch(shared: &Shared, batch: &mut Vec<Job>) -> bool {
    let mut queues = shared.queues();
    let Queues {
        units,
        turns,
        closed,
    } = &mut *queues;
    if turns.is_empty() && *closed {
        return false;
    }
    let mut bytes = 0;
    while batch.len() < BATCH && bytes < BATCH_BYTES {
        let Some(unit) = turns.pop_front() else {
            break;
        };
        let Some(queue) = units.get_mut(&unit) else {
            continue;
        };
        for _ in 0..TURN {
            if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                break;
            }
            let Some(job) = queue.jobs.pop_front() else {
                break;
            };
            bytes += job.item.payload.len();
            batch.push(job);
        }
        if queue.jobs.is_empty() {
            queue.scheduled = false;
            // Nobody holds or waits on an idle unit's budget: forget it.
            if Arc::strong_count(&queue.budget) == 1 {
                units.remove(&unit);
            }
        } else {
            turns.push_back(unit);
        }
    }
    true
}

/// Nodes and units whose history or logs may be over their limits.
#[derive(Default)]
struct Dirty {
    nodes: HashSet<Uuid>,
    logs: HashSet<Uuid>,
}

/// A unit's log lines in the current minute.
struct LogWindow {
    since: Instant,
    lines: u32,
}

/// Taken by the writer for each batch and by the trimmer for each statement: tokio's mutex is fair, so a
/// long trim (millions of rows after a policy switch) alternates with the batches instead of holding
/// SQLite's write lock while they wait.
type WriteGate = Arc<tokio::sync::Mutex<()>>;

async fn run(services: Services, shared: Arc<Shared>, dirty: Arc<Mutex<Dirty>>, gate: WriteGate) {
    let log_ttl = Duration::from_secs(shared.settings.log_ttl_seconds);
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    let mut live = Vec::new();
    let mut windows: HashMap<Uuid, LogWindow> = HashMap::new();
    loop {
        if !next_batch(&shared, &mut batch) {
            return;
        }
        if batch.is_empty() {
            shared.ready.notified().await;
            continue;
        }
        let watched = services.live().watched();
        let mut touched = Dirty::default();
        let turn = gate.lock().await;
        let mut attempts = 0u64;
        let ok = loop {
            let written = write(
                services.db(),
                &shared,
                log_ttl,
                &batch,
                watched.then_some(&mut live),
                &mut windows,
                &mut touched,
            )
            .await;
            match written {
                Ok(()) => break true,
                // Another writer in the way (PostgreSQL aborting one side of a deadlock with a rollout
                // wave, say): the batch rolled back whole, so it is written again rather than lost. A
                // retried batch's log lines count twice towards the minute's quota, which errs towards
                // refusing a flood, never towards losing a value.
                Err(crate::error::Error::Database(error))
                    if crate::db::is_busy(&error) && attempts < 10 =>
                {
                    attempts += 1;
                    tracing::info!(%error, attempts, "ingestion batch in the way of another writer; again");
                    live.clear();
                    touched = Dirty::default();
                    tokio::time::sleep(Duration::from_millis(20 * attempts)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, items = batch.len(), "ingestion batch failed");
                    live.clear();
                    break false;
                }
            }
        };
        drop(turn);
        // Connections first: they are waiting on this commit. Then federation, which never waits.
        for job in batch.drain(..) {
            let _ = job.done.send(ok);
            if ok {
                // Alerting and federation never hold ingestion up: a value no rule or peer watches is
                // skipped at a hash look-up, a watched one is queued without waiting.
                let alerts = services.alerts();
                match job.item.sink {
                    Sink::Value(node) => {
                        alerts.observe_value(job.item.unit, node, &job.item.payload, job.item.at);
                        services.federation_tap().offer(
                            job.item.unit,
                            node,
                            &job.item.payload,
                            job.item.at,
                        );
                    }
                    Sink::State => alerts.observe_state(job.item.unit, &job.item.payload),
                    Sink::Log => {}
                }
            }
        }
        for event in live.drain(..) {
            services.live().send(event);
        }
        if ok {
            let mut dirty = dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            dirty.nodes.extend(touched.nodes);
            dirty.logs.extend(touched.logs);
        }
        let minute = Duration::from_secs(60);
        windows.retain(|_, window| window.since.elapsed() < minute);
    }
}

/// Writes one batch; fills `live` (when someone watches) with what to announce once it is committed and
/// `touched` with the nodes and units that got history or logs.
async fn write(
    db: &DatabaseConnection,
    shared: &Shared,
    log_ttl: Duration,
    batch: &[Job],
    mut live: Option<&mut Vec<LiveEvent>>,
    windows: &mut HashMap<Uuid, LogWindow>,
    touched: &mut Dirty,
) -> Result<()> {
    let settings = &shared.settings;
    let txn = crate::db::begin_write(db).await?;
    // Values, grouped by node, in arrival order.
    let mut values: HashMap<Uuid, Vec<(String, DateTime<Utc>)>> = HashMap::new();
    for Job { item, .. } in batch {
        match item.sink {
            Sink::Value(node) => {
                // Values are text in the API; bytes that are not UTF-8 are replaced, not refused.
                let text = String::from_utf8_lossy(&item.payload).into_owned();
                if let Some(live) = live.as_deref_mut() {
                    live.push(LiveEvent::Value {
                        unit: item.unit,
                        node,
                        value: text.clone(),
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
            Sink::Log => {
                let window = windows.entry(item.unit).or_insert_with(|| LogWindow {
                    since: Instant::now(),
                    lines: 0,
                });
                let left = settings.log_lines_per_minute.saturating_sub(window.lines);
                let max = settings
                    .log_entries_per_message
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                match data::record_logs(&txn, item.unit, &item.payload, log_ttl, max).await {
                    Ok(recorded) => {
                        let stored = u32::try_from(recorded.stored.len()).unwrap_or(u32::MAX);
                        window.lines = window.lines.saturating_add(stored);
                        if recorded.refused > 0 {
                            let limit = if max < settings.log_entries_per_message {
                                "log_rate"
                            } else {
                                "log_entries"
                            };
                            shared.hit(limit, item.unit, recorded.refused as u64);
                        }
                        if stored > 0 {
                            touched.logs.insert(item.unit);
                        }
                        if let Some(live) = live.as_deref_mut() {
                            live.extend(recorded.stored.into_iter().map(|e| LiveEvent::Log {
                                unit: item.unit,
                                level: e.level,
                                text: e.text,
                            }));
                        }
                    }
                    Err(error) => tracing::debug!(unit = %item.unit, %error, "log refused"),
                }
            }
        }
    }
    if !values.is_empty() {
        write_values(&txn, values, touched).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Stores the batch's values: every node's last value in one `UPDATE … FROM (VALUES …)` (SQLite ≥ 3.33
/// and PostgreSQL), the history in multi-row inserts.
async fn write_values(
    txn: &impl ConnectionTrait,
    values: HashMap<Uuid, Vec<(String, DateTime<Utc>)>>,
    touched: &mut Dirty,
) -> Result<()> {
    let mut policies = HashMap::new();
    let uuids: Vec<Uuid> = values.keys().copied().collect();
    for chunk in uuids.chunks(VARIABLES) {
        let nodes = unit_nodes::Entity::find()
            .filter(unit_nodes::Column::Uuid.is_in(chunk.iter().copied()))
            .all(txn)
            .await?;
        policies.extend(nodes.iter().map(|n| (n.uuid, HistoryPolicy::of(n))));
    }
    let mut last = Vec::with_capacity(policies.len());
    let mut history = Vec::new();
    for (node, list) in values {
        let Some(&policy) = policies.get(&node) else {
            // The node went while its value waited.
            continue;
        };
        if let Some((value, at)) = list.last() {
            last.push((node, value.clone(), *at));
        }
        if policy == HistoryPolicy::LastValue {
            continue;
        }
        touched.nodes.insert(node);
        history.extend(
            list.into_iter()
                .map(|(value, at)| unit_node_values::ActiveModel {
                    unit_node_uuid: Set(node),
                    value: Set(value),
                    created_at: Set(at),
                    ..Default::default()
                }),
        );
    }
    let backend = txn.get_database_backend();
    for chunk in last.chunks(VARIABLES / 3) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut binds = Vec::with_capacity(chunk.len() * 3);
        for (node, value, at) in chunk {
            let n = binds.len();
            rows.push(match backend {
                DbBackend::Postgres => format!(
                    "(CAST(${} AS uuid), CAST(${} AS text), CAST(${} AS timestamptz))",
                    n + 1,
                    n + 2,
                    n + 3
                ),
                _ => "(?, ?, ?)".to_owned(),
            });
            binds.push(Value::from(*node));
            binds.push(Value::from(value.clone()));
            binds.push(Value::from(*at));
        }
        let sql = format!(
            "UPDATE unit_nodes SET last_value = v.column2, last_value_at = v.column3, \
             updated_at = v.column3 FROM (VALUES {}) AS v WHERE unit_nodes.uuid = v.column1",
            rows.join(", ")
        );
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, binds))
            .await?;
    }
    // Three columns a row.
    for chunk in history.chunks(2000) {
        unit_node_values::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Trims, once a second, the history of nodes that got values and the logs of units that got lines, each
/// statement deleting at most [`data::TRIM_BATCH`] rows outside any ingestion transaction. What is left
/// over (a node switched to a smaller policy with millions of rows) goes on in the next rounds.
async fn run_trims(services: Services, dirty: Arc<Mutex<Dirty>>, gate: WriteGate) {
    let keep_logs = services.units().log_lines_kept;
    let mut ticker = tokio::time::interval(TRIM_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = Dirty::default();
    loop {
        ticker.tick().await;
        {
            let mut dirty = dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.nodes.extend(dirty.nodes.drain());
            pending.logs.extend(dirty.logs.drain());
        }
        let mut budget = TRIMS_PER_ROUND;
        let nodes: Vec<Uuid> = pending.nodes.iter().copied().collect();
        'nodes: for node in nodes {
            // A node with much to trim goes on within the round's budget, a statement at a time.
            loop {
                if budget == 0 {
                    break 'nodes;
                }
                budget -= 1;
                let trimmed = {
                    let _turn = gate.lock().await;
                    trim_node(services.db(), node).await
                };
                match trimmed {
                    Ok(true) => {}
                    Ok(false) => {
                        pending.nodes.remove(&node);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%node, ?error, "trimming history failed");
                        pending.nodes.remove(&node);
                        break;
                    }
                }
            }
        }
        let units: Vec<Uuid> = pending.logs.iter().copied().collect();
        for unit in units {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let trimmed = {
                let _turn = gate.lock().await;
                data::trim_logs(services.db(), unit, keep_logs).await
            };
            match trimmed {
                Ok(true) => {}
                Ok(false) => {
                    pending.logs.remove(&unit);
                }
                Err(error) => {
                    tracing::warn!(%unit, ?error, "trimming logs failed");
                    pending.logs.remove(&unit);
                }
            }
        }
    }
}

/// One bounded trim of a node's history by its current policy; whether more may remain.
async fn trim_node(db: &DatabaseConnection, node: Uuid) -> Result<bool> {
    let Some(row) = unit_nodes::Entity::find_by_id(node).one(db).await? else {
        return Ok(false);
    };
    data::trim_history(db, node, HistoryPolicy::of(&row), Utc::now()).await
}
