//! Aggregates of an output's numeric values over tumbling windows: count, sum, min, max, average and the
//! exact median of each window, kept up to date as samples arrive and stored as their own series
//! (`unit_node_aggregates`, one row per node, window length and window start).
//!
//! The ingestion writer feeds each batch to an [`Aggregator`], which keeps every open window in memory
//! (the median from two heaps, so each sample costs a logarithm) and writes, per batch, one upsert of the
//! rows it changed and one insert of the samples it took into `unit_node_window_samples`. Those samples
//! are what lets a restarted server (or one that forgot an idle window) continue an open window exactly:
//! it reads back the samples of that window only, never recomputes closed ones, which are final rows.
//!
//! A window is open from its first sample until a sample of a later window arrives; a sample older than
//! the open window (a late explicit time) is stored in the direct log but not aggregated by that window
//! (counted as `late`). Samples of closed windows are deleted by the trimmer, as are aggregate rows beyond
//! each series' retention.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{OnConflict, Order, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use crate::entities::{unit_node_aggregates as aggregates, unit_node_window_samples as samples};
use crate::error::Result;
use crate::services::units::data::TRIM_BATCH;
use crate::services::units::links::visible_node;
use crate::services::units::processing::{Processing, Reason, WindowSpec};
use crate::services::{Actor, Services};

/// Rows one statement binds, well under both engines' bound-parameter limits.
const VARIABLES: usize = 30_000;
/// An open window nobody fed for this long leaves memory; its next sample reads it back.
const IDLE: Duration = Duration::from_secs(600);

/// One window of an aggregate series.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateRow {
    pub window_start: DateTime<Utc>,
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub median: f64,
}

impl From<aggregates::Model> for AggregateRow {
    fn from(row: aggregates::Model) -> Self {
        Self {
            window_start: row.window_start,
            count: row.count,
            sum: row.sum,
            min: row.min,
            max: row.max,
            avg: row.avg,
            median: row.median,
        }
    }
}

/// The start of the oldest stored window of `node`'s `window_seconds` series, if it has any.
pub async fn first_window_start(
    db: &impl ConnectionTrait,
    node: Uuid,
    window_seconds: u32,
) -> Result<Option<DateTime<Utc>>> {
    Ok(aggregates::Entity::find()
        .filter(aggregates::Column::UnitNodeUuid.eq(node))
        .filter(aggregates::Column::WindowSeconds.eq(seconds_column(window_seconds)))
        .order_by_asc(aggregates::Column::WindowStart)
        .one(db)
        .await?
        .map(|row| row.window_start))
}

/// The `window_seconds` series of `node` whose windows start in `[from, to)`, oldest first. No visibility
/// check: the caller has already made sure the actor may read the node. Bounded by the series' retention
/// (at most [`super::processing::KEEP_COUNT_MAX`] rows).
pub async fn aggregate_series(
    db: &impl ConnectionTrait,
    node: Uuid,
    window_seconds: u32,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<AggregateRow>> {
    Ok(aggregates::Entity::find()
        .filter(aggregates::Column::UnitNodeUuid.eq(node))
        .filter(aggregates::Column::WindowSeconds.eq(seconds_column(window_seconds)))
        .filter(aggregates::Column::WindowStart.gte(from))
        .filter(aggregates::Column::WindowStart.lt(to))
        .order_by_asc(aggregates::Column::WindowStart)
        .all(db)
        .await?
        .into_iter()
        .map(AggregateRow::from)
        .collect())
}

/// The newest `limit` windows (at most 1,000) of a node's `window_seconds` series, optionally those
/// starting in `[from, to)`, newest first; for whoever may see the node.
pub async fn latest(
    services: &Services,
    actor: &Actor,
    node: Uuid,
    window_seconds: u32,
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    limit: u64,
) -> Result<Vec<AggregateRow>> {
    visible_node(services, actor, node).await?;
    let mut select = aggregates::Entity::find()
        .filter(aggregates::Column::UnitNodeUuid.eq(node))
        .filter(aggregates::Column::WindowSeconds.eq(seconds_column(window_seconds)));
    if let Some(from) = range.0 {
        select = select.filter(aggregates::Column::WindowStart.gte(from));
    }
    if let Some(to) = range.1 {
        select = select.filter(aggregates::Column::WindowStart.lt(to));
    }
    Ok(select
        .order_by_desc(aggregates::Column::WindowStart)
        .limit(limit.min(1000))
        .all(services.db())
        .await?
        .into_iter()
        .map(AggregateRow::from)
        .collect())
}

/// How many samples of a node each reason turned away or left out of aggregation; for whoever may see it.
pub async fn rejections(
    services: &Services,
    actor: &Actor,
    node: Uuid,
) -> Result<Vec<(Reason, i64)>> {
    use crate::entities::unit_node_rejections as rejections;
    visible_node(services, actor, node).await?;
    let rows = rejections::Entity::find()
        .filter(rejections::Column::UnitNodeUuid.eq(node))
        .all(services.db())
        .await?;
    let mut counts: Vec<(Reason, i64)> = rows
        .into_iter()
        .filter_map(|row| Reason::parse(&row.reason).map(|reason| (reason, row.count)))
        .collect();
    counts.sort_by_key(|(reason, _)| Reason::ALL.iter().position(|r| r == reason));
    Ok(counts)
}

fn seconds_column(seconds: u32) -> i32 {
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// The start of the `seconds`-long window holding `at`.
fn window_start(at: DateTime<Utc>, seconds: u32) -> i64 {
    let seconds = i64::from(seconds.max(1));
    at.timestamp().div_euclid(seconds) * seconds
}

fn from_timestamp(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// An `f64` ordered totally, for the heaps.
#[derive(Debug, Clone, Copy)]
struct Sample(f64);

impl PartialEq for Sample {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Sample {}
impl PartialOrd for Sample {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sample {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The state of one open window.
#[derive(Debug, Clone)]
struct OpenWindow {
    start: i64,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    /// The lower half of the samples (max on top) and the upper half (min on top); the lower half has
    /// as many or one more.
    lower: BinaryHeap<Sample>,
    upper: BinaryHeap<Reverse<Sample>>,
}

impl OpenWindow {
    fn new(start: i64) -> Self {
        Self {
            start,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            lower: BinaryHeap::new(),
            upper: BinaryHeap::new(),
        }
    }

    fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        match self.lower.peek() {
            Some(top) if value > top.0 => self.upper.push(Reverse(Sample(value))),
            _ => self.lower.push(Sample(value)),
        }
        if self.lower.len() > self.upper.len() + 1 {
            if let Some(moved) = self.lower.pop() {
                self.upper.push(Reverse(moved));
            }
        } else if self.upper.len() > self.lower.len()
            && let Some(Reverse(moved)) = self.upper.pop()
        {
            self.lower.push(moved);
        }
    }

    fn median(&self) -> f64 {
        match (self.lower.peek(), self.upper.peek()) {
            (Some(low), Some(Reverse(high))) if self.lower.len() == self.upper.len() => {
                (low.0 + high.0) / 2.0
            }
            (Some(low), _) => low.0,
            _ => f64::NAN,
        }
    }

    fn row(&self, node: Uuid, seconds: u32, now: DateTime<Utc>) -> aggregates::ActiveModel {
        aggregates::ActiveModel {
            unit_node_uuid: Set(node),
            window_seconds: Set(seconds_column(seconds)),
            window_start: Set(from_timestamp(self.start)),
            count: Set(self.count),
            sum: Set(self.sum),
            min: Set(self.min),
            max: Set(self.max),
            avg: Set(self.sum / self.count.max(1) as f64),
            median: Set(self.median()),
            updated_at: Set(now),
        }
    }
}

/// One node's share of a batch: its windows and its numeric samples, in arrival order.
pub struct NodeSamples<'a> {
    pub node: Uuid,
    pub windows: &'a [WindowSpec],
    pub samples: Vec<(DateTime<Utc>, f64)>,
}

/// Each node's open windows, by window length; `None`: read back, and the series has no window yet.
#[derive(Default)]
pub struct Aggregator {
    open: HashMap<(Uuid, u32), Option<OpenWindow>>,
    used: HashMap<Uuid, Instant>,
}

impl Aggregator {
    /// Aggregates a batch inside the writer's transaction `txn`: reads back the windows it does not hold,
    /// adds the samples, upserts the changed rows and stores the samples taken. Skipped samples are added
    /// to `skipped`. Returns the nodes where a window opened (so a series grew, or a window closed and
    /// its samples may go): those the trimmer should look at. If the transaction does not commit, the
    /// caller must [`Self::forget`] these nodes.
    pub async fn feed(
        &mut self,
        txn: &impl ConnectionTrait,
        batch: Vec<NodeSamples<'_>>,
        skipped: &mut HashMap<(Uuid, Reason), i64>,
    ) -> Result<HashSet<Uuid>> {
        let now = Utc::now();
        let missing: Vec<(Uuid, u32)> = batch
            .iter()
            .flat_map(|n| n.windows.iter().map(|w| (n.node, w.seconds)))
            .filter(|key| !self.open.contains_key(key))
            .collect();
        if !missing.is_empty() {
            self.read_back(txn, &missing).await?;
        }
        let mut rows = Vec::new();
        let mut taken = Vec::new();
        let mut opened = HashSet::new();
        let instant = Instant::now();
        for NodeSamples {
            node,
            windows,
            samples: values,
        } in batch
        {
            self.used.insert(node, instant);
            let mut changed: HashSet<u32> = HashSet::new();
            for (at, value) in values {
                let mut took = false;
                for window in windows {
                    let start = window_start(at, window.seconds);
                    let slot = self.open.entry((node, window.seconds)).or_insert(None);
                    match slot {
                        Some(open) if open.start == start => open.add(value),
                        Some(open) if open.start > start => {
                            *skipped.entry((node, Reason::Late)).or_default() += 1;
                            continue;
                        }
                        _ => {
                            // A later window: the one open is final as last written (or as below).
                            if let Some(closed) = slot.as_ref()
                                && changed.remove(&window.seconds)
                            {
                                rows.push(closed.row(node, window.seconds, now));
                            }
                            let mut open = OpenWindow::new(start);
                            open.add(value);
                            *slot = Some(open);
                            opened.insert(node);
                        }
                    }
                    changed.insert(window.seconds);
                    took = true;
                }
                if took {
                    taken.push(samples::ActiveModel {
                        unit_node_uuid: Set(node),
                        at: Set(at),
                        value: Set(value),
                        ..Default::default()
                    });
                }
            }
            for seconds in changed {
                if let Some(Some(open)) = self.open.get(&(node, seconds)) {
                    rows.push(open.row(node, seconds, now));
                }
            }
        }
        let conflict = OnConflict::columns([
            aggregates::Column::UnitNodeUuid,
            aggregates::Column::WindowSeconds,
            aggregates::Column::WindowStart,
        ])
        .update_columns([
            aggregates::Column::Count,
            aggregates::Column::Sum,
            aggregates::Column::Min,
            aggregates::Column::Max,
            aggregates::Column::Avg,
            aggregates::Column::Median,
            aggregates::Column::UpdatedAt,
        ])
        .to_owned();
        // Ten columns a row.
        for chunk in rows.chunks(VARIABLES / 10) {
            aggregates::Entity::insert_many(chunk.to_vec())
                .on_conflict(conflict.clone())
                .exec(txn)
                .await?;
        }
        // Three columns a row.
        for chunk in taken.chunks(VARIABLES / 3) {
            samples::Entity::insert_many(chunk.to_vec())
                .exec(txn)
                .await?;
        }
        Ok(opened)
    }

    /// Reads back the open windows of `keys`: each series' newest window and that window's samples.
    async fn read_back(&mut self, db: &impl ConnectionTrait, keys: &[(Uuid, u32)]) -> Result<()> {
        let nodes: HashSet<Uuid> = keys.iter().map(|(node, _)| *node).collect();
        let nodes: Vec<Uuid> = nodes.into_iter().collect();
        let wanted: HashSet<(Uuid, u32)> = keys.iter().copied().collect();
        let mut newest: HashMap<Uuid, Vec<(u32, DateTime<Utc>)>> = HashMap::new();
        for chunk in nodes.chunks(VARIABLES) {
            let rows: Vec<(Uuid, i32, DateTime<Utc>)> = aggregates::Entity::find()
                .select_only()
                .column(aggregates::Column::UnitNodeUuid)
                .column(aggregates::Column::WindowSeconds)
                .column_as(aggregates::Column::WindowStart.max(), "newest")
                .filter(aggregates::Column::UnitNodeUuid.is_in(chunk.iter().copied()))
                .group_by(aggregates::Column::UnitNodeUuid)
                .group_by(aggregates::Column::WindowSeconds)
                .into_tuple()
                .all(db)
                .await?;
            for (node, seconds, start) in rows {
                let Ok(seconds) = u32::try_from(seconds) else {
                    continue;
                };
                if wanted.contains(&(node, seconds)) {
                    newest.entry(node).or_default().push((seconds, start));
                }
            }
        }
        for key in keys {
            self.open.insert(*key, None);
        }
        // Only after a restart or an idle spell: one query per node that has open windows.
        for (node, windows) in newest {
            let Some(from) = windows.iter().map(|(_, start)| *start).min() else {
                continue;
            };
            let mut open: Vec<(u32, OpenWindow)> = windows
                .iter()
                .map(|(seconds, start)| (*seconds, OpenWindow::new(start.timestamp())))
                .collect();
            let values: Vec<(DateTime<Utc>, f64)> = samples::Entity::find()
                .select_only()
                .column(samples::Column::At)
                .column(samples::Column::Value)
                .filter(samples::Column::UnitNodeUuid.eq(node))
                .filter(samples::Column::At.gte(from))
                .order_by_asc(samples::Column::Id)
                .into_tuple()
                .all(db)
                .await?;
            for (at, value) in values {
                for (seconds, window) in &mut open {
                    if window_start(at, *seconds) == window.start {
                        window.add(value);
                    }
                }
            }
            for (seconds, window) in open {
                self.open.insert((node, seconds), Some(window));
            }
        }
        Ok(())
    }

    /// Drops what memory holds of `nodes` (a batch that did not commit changed it): read back next time.
    pub fn forget(&mut self, nodes: &HashSet<Uuid>) {
        self.open.retain(|(node, _), _| !nodes.contains(node));
        for node in nodes {
            self.used.remove(node);
        }
    }

    /// Drops the windows of nodes not fed for a while, so memory holds only active series.
    pub fn forget_idle(&mut self) {
        let now = Instant::now();
        let idle: HashSet<Uuid> = self
            .used
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= IDLE)
            .map(|(node, _)| *node)
            .collect();
        if !idle.is_empty() {
            self.forget(&idle);
        }
    }
}

/// One bounded step of a node's processing retention: the samples of windows that closed, aggregate rows
/// beyond each series' age and count, and the series of windows no longer configured. Each statement
/// deletes at most [`TRIM_BATCH`] rows; returns whether more may remain.
pub async fn trim(
    db: &impl ConnectionTrait,
    node: Uuid,
    processing: Option<&Processing>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let windows: &[WindowSpec] = processing.map_or(&[], |p| p.windows.as_slice());
    let mut more = false;
    // Samples: only the open windows need theirs.
    let mut open_from: Option<DateTime<Utc>> = None;
    let mut all_open = true;
    for window in windows {
        match newest_start(db, node, window.seconds).await? {
            Some(start) => open_from = Some(open_from.map_or(start, |o| o.min(start))),
            None => all_open = false,
        }
    }
    let doomed = match (windows.is_empty(), open_from) {
        (true, _) => Some(None),
        (false, Some(from)) if all_open => Some(Some(from)),
        // A series without a window yet may still take samples of any time: keep them all until it has one.
        _ => None,
    };
    if let Some(before) = doomed {
        let mut batch = Query::select()
            .column(samples::Column::Id)
            .from(samples::Entity)
            .and_where(samples::Column::UnitNodeUuid.eq(node))
            .order_by(samples::Column::Id, Order::Asc)
            .limit(TRIM_BATCH)
            .to_owned();
        if let Some(before) = before {
            batch.and_where(samples::Column::At.lt(before));
        }
        let deleted = samples::Entity::delete_many()
            .filter(samples::Column::Id.in_subquery(batch))
            .exec(db)
            .await?
            .rows_affected;
        more |= deleted >= TRIM_BATCH;
    }
    for window in windows {
        let seconds = window.seconds;
        if let Some(keep) = window.keep_seconds {
            let cutoff = now - chrono::Duration::seconds(i64::from(keep));
            more |= delete_before(db, node, seconds, Some(cutoff)).await?;
        }
        let keep_from: Option<DateTime<Utc>> = aggregates::Entity::find()
            .select_only()
            .column(aggregates::Column::WindowStart)
            .filter(aggregates::Column::UnitNodeUuid.eq(node))
            .filter(aggregates::Column::WindowSeconds.eq(seconds_column(seconds)))
            .order_by_desc(aggregates::Column::WindowStart)
            .offset(u64::from(window.keep_count.saturating_sub(1)))
            .limit(1)
            .into_tuple()
            .one(db)
            .await?;
        if let Some(keep_from) = keep_from {
            more |= delete_before(db, node, seconds, Some(keep_from)).await?;
        }
    }
    let stored: Vec<i32> = aggregates::Entity::find()
        .select_only()
        .column(aggregates::Column::WindowSeconds)
        .distinct()
        .filter(aggregates::Column::UnitNodeUuid.eq(node))
        .into_tuple()
        .all(db)
        .await?;
    for seconds in stored {
        let Ok(seconds) = u32::try_from(seconds) else {
            continue;
        };
        if !windows.iter().any(|w| w.seconds == seconds) {
            more |= delete_before(db, node, seconds, None).await?;
        }
    }
    Ok(more)
}

/// The start of a series' newest window.
async fn newest_start(
    db: &impl ConnectionTrait,
    node: Uuid,
    seconds: u32,
) -> Result<Option<DateTime<Utc>>> {
    Ok(aggregates::Entity::find()
        .select_only()
        .column(aggregates::Column::WindowStart)
        .filter(aggregates::Column::UnitNodeUuid.eq(node))
        .filter(aggregates::Column::WindowSeconds.eq(seconds_column(seconds)))
        .order_by_desc(aggregates::Column::WindowStart)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?)
}

/// Deletes the oldest rows of a series, those starting before `before` (all: none), at most
/// [`TRIM_BATCH`] of them; whether more may remain.
async fn delete_before(
    db: &impl ConnectionTrait,
    node: Uuid,
    seconds: u32,
    before: Option<DateTime<Utc>>,
) -> Result<bool> {
    let series = || {
        let mut condition = Condition::all()
            .add(aggregates::Column::UnitNodeUuid.eq(node))
            .add(aggregates::Column::WindowSeconds.eq(seconds_column(seconds)));
        if let Some(before) = before {
            condition = condition.add(aggregates::Column::WindowStart.lt(before));
        }
        condition
    };
    // The start of the first row past one batch: delete what is before it, and say more remains.
    let bound: Option<DateTime<Utc>> = aggregates::Entity::find()
        .select_only()
        .column(aggregates::Column::WindowStart)
        .filter(series())
        .order_by_asc(aggregates::Column::WindowStart)
        .offset(TRIM_BATCH)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    let mut delete = aggregates::Entity::delete_many().filter(series());
    if let Some(bound) = bound {
        delete = delete.filter(aggregates::Column::WindowStart.lt(bound));
    }
    delete.exec(db).await?;
    Ok(bound.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_two_heaps_give_the_exact_median(values in prop::collection::vec(-1.0e6f64..1.0e6, 1..300)) {
            let mut window = OpenWindow::new(0);
            for value in &values {
                window.add(*value);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let median = if n % 2 == 1 {
                sorted[n / 2]
            } else {
                (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
            };
            prop_assert_eq!(window.median(), median);
            prop_assert_eq!(window.count, n as i64);
            prop_assert_eq!(window.min, sorted[0]);
            prop_assert_eq!(window.max, sorted[n - 1]);
        }
    }

    #[test]
    fn windows_start_at_multiples_of_their_length_before_the_epoch_too() {
        let at = |s| DateTime::from_timestamp(s, 0).unwrap_or_default();
        assert_eq!(window_start(at(119), 60), 60);
        assert_eq!(window_start(at(120), 60), 120);
        assert_eq!(window_start(at(-1), 60), -60);
    }
}
