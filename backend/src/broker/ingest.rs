//! Group commit of what units publish: values, state and logs.
//!
//! Connections hand each publish to one writer task and wait; the writer takes a batch, writes it in one
//! transaction, and only then answers each waiting connection, which only then acknowledges to the unit.
//! So a PUBACK always means "committed", and under load thousands of values share one commit.
//!
//! Fairness: each unit has its own queue with a byte budget (`ingest_unit_backlog_bytes`). A unit over its
//! budget waits in [`Ingestor::submit`], which stalls only that unit's connection; the writer fills each
//! batch round-robin, a few publishes per unit per turn, so one unit's backlog never delays another's
//! commit. Within a batch each value first goes through its output's processing filters (settings read with
//! the node rows the batch loads anyway, parsed once per change); the last values are one statement, the
//! history one insert per 2,000 rows, the aggregates of the numeric ones one upsert and their window
//! samples one insert ([`aggregates::Aggregator`]). Trimming history, aggregates and logs to their limits
//! runs beside it in bounded steps ([`run_trims`]).

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

use crate::entities::{
    unit_node_aggregates, unit_node_values, unit_node_window_samples, unit_nodes,
};
use crate::error::Result;
use crate::services::units::aggregates::{self, Aggregator, NodeSamples};
use crate::services::units::data;
use crate::services::units::live::LiveEvent;
use crate::services::units::nodes::HistoryPolicy;
use crate::services::units::processing::{
    self, FilterState, Processing, REJECTED, Reason, ReasonLabels,
};
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
/// Trim rounds between sweeps over every processed node (for retention by age): ten minutes.
const SWEEP_EVERY: u64 = 600;
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

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed: acknowledge it and route it.
    Stored,
    /// Received but turned away by its output's processing filters (and counted): acknowledge it, do not
    /// route it.
    Filtered,
    /// Not stored (a database failure, or too large): no acknowledgement, the unit sends it again.
    Failed,
}

/// A queued publish, its answer, and the share of its unit's budget it holds until answered.
struct Job {
    item: Item,
    done: oneshot::Sender<Outcome>,
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

    /// Queues `item` and returns what answers once the batch holding it is committed: [`Outcome::Stored`],
    /// [`Outcome::Filtered`] by its output's processing, or [`Outcome::Failed`] if it could not be stored
    /// (the unit gets no acknowledgement). Waits while the unit's queue is over its budget, which holds
    /// back that unit's connection only.
    pub async fn submit(&self, item: Item) -> oneshot::Receiver<Outcome> {
        let (done, committed) = oneshot::channel();
        let settings = &self.shared.settings;
        if !self.fits(&item) {
            self.shared.hit("value_size", item.unit, 1);
            let _ = done.send(Outcome::Failed);
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

/// Nodes and units whose history, aggregates or logs may be over their limits.
#[derive(Default)]
struct Dirty {
    nodes: HashSet<Uuid>,
    /// Nodes where an aggregate window opened: a series grew, or a closed window's samples may go.
    processed: HashSet<Uuid>,
    logs: HashSet<Uuid>,
}

/// What the writer keeps of processing between batches: the rate buckets, the open windows, and each
/// node's parsed settings (parsed again only when the node's column changed).
#[derive(Default)]
struct Processor {
    filters: FilterState,
    aggregator: Aggregator,
    parsed: HashMap<Uuid, (String, Arc<Processing>)>,
}

impl Processor {
    fn settings(&mut self, node: &unit_nodes::Model) -> Option<Arc<Processing>> {
        let Some(text) = node.processing.as_deref() else {
            self.parsed.remove(&node.uuid);
            return None;
        };
        if let Some((known, parsed)) = self.parsed.get(&node.uuid)
            && known == text
        {
            return Some(parsed.clone());
        }
        let parsed = Arc::new(Processing::of(node)?);
        self.parsed
            .insert(node.uuid, (text.to_owned(), parsed.clone()));
        Some(parsed)
    }
}

/// One value of a batch: which job it came from, its text and time.
struct Sample {
    job: usize,
    unit: Uuid,
    text: String,
    utf8: bool,
    at: DateTime<Utc>,
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
    let mut processor = Processor::default();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(BATCH);
    let mut rounds = 0u64;
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
            outcomes.clear();
            outcomes.resize(batch.len(), Outcome::Stored);
            let written = write(
                services.db(),
                &shared,
                log_ttl,
                &batch,
                Writer {
                    live: watched.then_some(&mut live),
                    windows: &mut windows,
                    touched: &mut touched,
                    processor: &mut processor,
                    outcomes: &mut outcomes,
                },
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
        for (index, job) in batch.drain(..).enumerate() {
            let outcome = match outcomes.get(index) {
                Some(outcome) if ok => *outcome,
                _ => Outcome::Failed,
            };
            let _ = job.done.send(outcome);
            if outcome == Outcome::Stored {
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
            dirty.processed.extend(touched.processed);
            dirty.logs.extend(touched.logs);
        }
        let minute = Duration::from_secs(60);
        windows.retain(|_, window| window.since.elapsed() < minute);
        rounds += 1;
        if rounds.is_multiple_of(1024) {
            processor.aggregator.forget_idle();
            processor.filters.forget_idle(Duration::from_secs(u64::from(
                processing::RATE_PERIOD_MAX_SECONDS,
            )));
            // Settings of nodes that went are not kept for ever; the rest are parsed again once.
            processor.parsed.clear();
        }
    }
}

/// What one batch's write fills in or keeps between batches.
struct Writer<'a> {
    /// When someone watches: what to announce once the batch is committed.
    live: Option<&'a mut Vec<LiveEvent>>,
    windows: &'a mut HashMap<Uuid, LogWindow>,
    /// The nodes and units that got history, aggregates or logs.
    touched: &'a mut Dirty,
    processor: &'a mut Processor,
    /// Each job's outcome, by its index in the batch (all [`Outcome::Stored`] on entry).
    outcomes: &'a mut Vec<Outcome>,
}

/// Writes one batch in one transaction. If it does not commit, what processing changed in memory for it
/// is put back, so writing it again counts and aggregates it once.
async fn write(
    db: &DatabaseConnection,
    shared: &Shared,
    log_ttl: Duration,
    batch: &[Job],
    writer: Writer<'_>,
) -> Result<()> {
    let Writer {
        mut live,
        windows,
        touched,
        processor,
        outcomes,
    } = writer;
    let settings = &shared.settings;
    let txn = crate::db::begin_write(db).await?;
    // Values, grouped by node, in arrival order.
    let mut values: HashMap<Uuid, Vec<Sample>> = HashMap::new();
    for (job, Job { item, .. }) in batch.iter().enumerate() {
        match item.sink {
            Sink::Value(node) => {
                // Values are text in the API; bytes that are not UTF-8 are replaced, not refused.
                let (text, utf8) = match std::str::from_utf8(&item.payload) {
                    Ok(text) => (text.to_owned(), true),
                    Err(_) => (String::from_utf8_lossy(&item.payload).into_owned(), false),
                };
                values.entry(node).or_default().push(Sample {
                    job,
                    unit: item.unit,
                    text,
                    utf8,
                    at: item.at,
                });
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
    let mut rejected = HashMap::new();
    if !values.is_empty() {
        let nodes: HashSet<Uuid> = values.keys().copied().collect();
        let buckets = processor.filters.snapshot(nodes.iter().copied());
        let written = write_values(
            &txn,
            values,
            processor,
            ValuesOut {
                live,
                touched,
                outcomes,
                rejected: &mut rejected,
            },
        )
        .await;
        let committed = match written {
            Ok(()) => txn.commit().await.map_err(Into::into),
            Err(error) => Err(error),
        };
        if let Err(error) = committed {
            processor.filters.restore(buckets);
            processor.aggregator.forget(&nodes);
            return Err(error);
        }
    } else {
        txn.commit().await?;
    }
    for ((_, reason), count) in rejected {
        REJECTED
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc_by(u64::try_from(count).unwrap_or(0));
    }
    Ok(())
}

/// What [`write_values`] fills in.
struct ValuesOut<'a, 'b> {
    live: Option<&'b mut Vec<LiveEvent>>,
    touched: &'a mut Dirty,
    outcomes: &'a mut Vec<Outcome>,
    rejected: &'a mut HashMap<(Uuid, Reason), i64>,
}

/// Stores the batch's values: each through its output's filters, then every node's last value in one
/// `UPDATE … FROM (VALUES …)` (SQLite ≥ 3.33 and PostgreSQL), the history in multi-row inserts, the
/// aggregates of the numeric ones (one upsert), and the counts of what was turned away (one upsert).
async fn write_values(
    txn: &impl ConnectionTrait,
    values: HashMap<Uuid, Vec<Sample>>,
    processor: &mut Processor,
    out: ValuesOut<'_, '_>,
) -> Result<()> {
    let ValuesOut {
        mut live,
        touched,
        outcomes,
        rejected,
    } = out;
    let mut rows = HashMap::new();
    let uuids: Vec<Uuid> = values.keys().copied().collect();
    for chunk in uuids.chunks(VARIABLES) {
        let nodes = unit_nodes::Entity::find()
            .filter(unit_nodes::Column::Uuid.is_in(chunk.iter().copied()))
            .all(txn)
            .await?;
        rows.extend(nodes.into_iter().map(|n| (n.uuid, n)));
    }
    let now = Instant::now();
    let mut last = Vec::with_capacity(rows.len());
    let mut history = Vec::new();
    let mut settings = Vec::new();
    let mut numeric = Vec::new();
    for (node, list) in values {
        let Some(row) = rows.get(&node) else {
            // The node went while its value waited.
            continue;
        };
        let policy = HistoryPolicy::of(row);
        let processing = processor.settings(row);
        let list: Vec<Sample> = match &processing {
            None => list,
            Some(processing) => {
                let mut previous = row.last_value.clone();
                let mut kept = Vec::with_capacity(list.len());
                for sample in list {
                    let checked = processor.filters.check(
                        node,
                        processing,
                        &sample.text,
                        sample.utf8,
                        previous.as_deref(),
                        now,
                    );
                    match checked {
                        Ok(()) => {
                            previous = Some(sample.text.clone());
                            kept.push(sample);
                        }
                        Err(reason) => {
                            *rejected.entry((node, reason)).or_default() += 1;
                            if let Some(outcome) = outcomes.get_mut(sample.job) {
                                *outcome = Outcome::Filtered;
                            }
                        }
                    }
                }
                kept
            }
        };
        let Some(newest) = list.last() else {
            continue;
        };
        last.push((node, newest.text.clone(), newest.at));
        if let Some(processing) = processing.filter(|p| !p.windows.is_empty()) {
            let mut samples = Vec::with_capacity(list.len());
            for sample in &list {
                match processing::number(&sample.text) {
                    Some(value) => samples.push((sample.at, value)),
                    None => *rejected.entry((node, Reason::NotNumeric)).or_default() += 1,
                }
            }
            if !samples.is_empty() {
                numeric.push((node, samples));
                settings.push(processing);
            }
        }
        if let Some(live) = live.as_deref_mut() {
            live.extend(list.iter().map(|sample| LiveEvent::Value {
                unit: sample.unit,
                node,
                value: sample.text.clone(),
                at: sample.at,
            }));
        }
        if policy == HistoryPolicy::LastValue {
            continue;
        }
        touched.nodes.insert(node);
        history.extend(
            list.into_iter()
                .map(|sample| unit_node_values::ActiveModel {
                    unit_node_uuid: Set(node),
                    value: Set(sample.text),
                    created_at: Set(sample.at),
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
    if !numeric.is_empty() {
        let batch = numeric
            .into_iter()
            .zip(&settings)
            .map(|((node, samples), processing)| NodeSamples {
                node,
                windows: &processing.windows,
                samples,
            })
            .collect();
        let opened = processor.aggregator.feed(txn, batch, rejected).await?;
        touched.processed.extend(opened);
    }
    if !rejected.is_empty() {
        count_rejections(txn, rejected).await?;
    }
    Ok(())
}

/// Adds the batch's rejections to each node's counts, in one upsert per 10,000.
async fn count_rejections(
    txn: &impl ConnectionTrait,
    rejected: &HashMap<(Uuid, Reason), i64>,
) -> Result<()> {
    let backend = txn.get_database_backend();
    let counts: Vec<_> = rejected.iter().collect();
    for chunk in counts.chunks(VARIABLES / 3) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut binds = Vec::with_capacity(chunk.len() * 3);
        for ((node, reason), count) in chunk {
            let n = binds.len();
            rows.push(match backend {
                DbBackend::Postgres => format!(
                    "(CAST(${} AS uuid), ${}, CAST(${} AS bigint))",
                    n + 1,
                    n + 2,
                    n + 3
                ),
                _ => "(?, ?, ?)".to_owned(),
            });
            binds.push(Value::from(*node));
            binds.push(Value::from(reason.as_str()));
            binds.push(Value::from(**count));
        }
        let sql = format!(
            "INSERT INTO unit_node_rejections (unit_node_uuid, reason, count) VALUES {} \
             ON CONFLICT (unit_node_uuid, reason) DO UPDATE SET count = unit_node_rejections.count + excluded.count",
            rows.join(", ")
        );
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, binds))
            .await?;
    }
    Ok(())
}

/// Trims, once a second, the history of nodes that got values, the aggregates and window samples of
/// nodes where a window opened (and, every ten minutes, of every processed node, for retention by age),
/// and the logs of units that got lines, each statement deleting at most [`data::TRIM_BATCH`] rows outside
/// any ingestion transaction. What is left
/// over (a node switched to a smaller policy with millions of rows) goes on in the next rounds.
async fn run_trims(services: Services, dirty: Arc<Mutex<Dirty>>, gate: WriteGate) {
    let keep_logs = services.units().log_lines_kept;
    let mut ticker = tokio::time::interval(TRIM_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = Dirty::default();
    let mut rounds = 0u64;
    loop {
        ticker.tick().await;
        // Retention by age goes on without new samples: every node with processing, now and then.
        if rounds.is_multiple_of(SWEEP_EVERY) {
            match processed_nodes(services.db()).await {
                Ok(nodes) => pending.processed.extend(nodes),
                Err(error) => tracing::warn!(?error, "listing processed nodes failed"),
            }
        }
        rounds += 1;
        {
            let mut dirty = dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.nodes.extend(dirty.nodes.drain());
            pending.processed.extend(dirty.processed.drain());
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
        let nodes: Vec<Uuid> = pending.processed.iter().copied().collect();
        'processed: for node in nodes {
            loop {
                if budget == 0 {
                    break 'processed;
                }
                budget -= 1;
                let trimmed = {
                    let _turn = gate.lock().await;
                    trim_processing(services.db(), node).await
                };
                match trimmed {
                    Ok(true) => {}
                    Ok(false) => {
                        pending.processed.remove(&node);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%node, ?error, "trimming aggregates failed");
                        pending.processed.remove(&node);
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

/// One bounded step of a node's aggregate retention and window-sample clean-up by its processing;
/// whether more may remain.
async fn trim_processing(db: &DatabaseConnection, node: Uuid) -> Result<bool> {
    let Some(row) = unit_nodes::Entity::find_by_id(node).one(db).await? else {
        return Ok(false);
    };
    aggregates::trim(db, node, Processing::of(&row).as_ref(), Utc::now()).await
}

/// Nodes with processing settings, aggregates or window samples: those the periodic sweep trims.
async fn processed_nodes(db: &DatabaseConnection) -> Result<HashSet<Uuid>> {
    use sea_orm::QuerySelect;
    let mut nodes: HashSet<Uuid> = HashSet::new();
    let configured: Vec<Uuid> = unit_nodes::Entity::find()
        .select_only()
        .column(unit_nodes::Column::Uuid)
        .filter(unit_nodes::Column::Processing.is_not_null())
        .into_tuple()
        .all(db)
        .await?;
    nodes.extend(configured);
    let aggregated: Vec<Uuid> = unit_node_aggregates::Entity::find()
        .select_only()
        .column(unit_node_aggregates::Column::UnitNodeUuid)
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    nodes.extend(aggregated);
    let sampled: Vec<Uuid> = unit_node_window_samples::Entity::find()
        .select_only()
        .column(unit_node_window_samples::Column::UnitNodeUuid)
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    nodes.extend(sampled);
    Ok(nodes)
}
