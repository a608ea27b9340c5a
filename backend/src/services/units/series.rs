//! A variable's history as a time series: the samples of a time range downsampled on the server into at
//! most a requested number of buckets (for charts, Grafana and scripts), without sending every sample.
//!
//! Buckets are `step` seconds wide and aligned to multiples of `step` since the Unix epoch, so a range
//! that moves (a dashboard refreshing) keeps the same buckets. The database does the bucketing
//! (`GROUP BY` a bucket number; window functions for `MEDIAN` and `LAST`) on SQLite and PostgreSQL alike,
//! and returns at most one row a bucket: what the server reads is bounded by the points asked for, not by
//! the samples in the range. Empty buckets are left out.
//!
//! A sample counts when its text is a JSON number (`21.5`, `-3`, `1e3`); other values (text, JSON) are
//! skipped, except by `COUNT`, which counts every sample.
//!
//! An output with processing windows answers from its stored window aggregates instead when they fit the
//! step ([`stored_points`]).

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use uuid::Uuid;

use crate::domain::InvalidValue;
use crate::entities::unit_nodes;
use crate::error::{Error, Result};
use crate::services::units::aggregates;
use crate::services::units::links::visible_node;
use crate::services::units::processing::Processing;
use crate::services::{Actor, Services};

/// Most points one series returns; more asked for are this many.
pub const MAX_POINTS: u32 = 2_000;
/// Points when the caller does not say.
pub const DEFAULT_POINTS: u32 = 500;
/// Most samples one `MEDIAN` series sorts (the database sorts each bucket's samples); a range holding
/// more is refused, naming the bound, before any sorting.
pub const MEDIAN_MAX_SAMPLES: u64 = 1_000_000;

/// Steps the server picks from when the caller gives none, so points fall on round times; past a day,
/// whole days.
const ROUND_STEPS: [i64; 18] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];

/// How a bucket's samples become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Avg,
    Min,
    Max,
    Sum,
    /// Every sample, numeric or not.
    Count,
    /// The exact median: the middle sample, or the mean of the two middle ones.
    Median,
    /// The newest sample of the bucket (by its time, then by arrival).
    Last,
}

impl Aggregate {
    /// `avg`, `AVG`, …; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "avg" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "sum" => Self::Sum,
            "count" => Self::Count,
            "median" => Self::Median,
            "last" => Self::Last,
            _ => return None,
        })
    }
}

/// What a caller asks for: `[from, to)`, at most `max_points` buckets of `step_seconds` (the server picks
/// a round step when it is `None`, and widens a given one to a multiple that fits).
#[derive(Debug, Clone, Copy)]
pub struct SeriesRequest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub max_points: u32,
    pub step_seconds: Option<u32>,
    pub aggregate: Aggregate,
}

/// One bucket: its start, its value, and how many samples made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub time: DateTime<Utc>,
    pub value: f64,
    pub count: u64,
}

/// The buckets of a series that hold samples, oldest first.
#[derive(Debug, Clone)]
pub struct Series {
    /// The width of every bucket.
    pub step_seconds: i64,
    pub points: Vec<Point>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.into(),
    })
}

/// The bucket grid of a request: bucket `n` starts at `origin + n * step` (seconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grid {
    origin: i64,
    step: i64,
}

impl Grid {
    /// The grid with the fewest seconds a step that cuts `[from, to)` into at most `max_points`
    /// epoch-aligned buckets: a round step, or a multiple of the one asked for.
    fn plan(request: &SeriesRequest) -> Result<Self> {
        if request.to <= request.from {
            return Err(invalid("to", "must be after `from`"));
        }
        if request.max_points < 2 {
            return Err(invalid("maxPoints", format!("between 2 and {MAX_POINTS}")));
        }
        let max = i64::from(request.max_points.min(MAX_POINTS));
        let first = request.from.timestamp();
        // `to` is exclusive: the last second that may hold a sample.
        let last = (request.to - Duration::nanoseconds(1)).timestamp();
        let buckets = |step: i64| last.div_euclid(step) - first.div_euclid(step) + 1;
        // Any step of at least span / (max - 1) gives at most `max` buckets, however it is aligned.
        let span = last - first + 1;
        let enough = (span + max - 2) / (max - 1);
        let step = match request.step_seconds {
            Some(0) => return Err(invalid("step", "at least one second")),
            Some(asked) => {
                let asked = i64::from(asked);
                let mut step = asked * ((enough + asked - 1) / asked).max(1);
                // The smallest multiple that fits may be one below `enough`'s.
                while step > asked && buckets(step - asked) <= max {
                    step -= asked;
                }
                step
            }
            None => match ROUND_STEPS.iter().copied().find(|&s| buckets(s) <= max) {
                Some(step) => step,
                None => 86_400 * ((enough + 86_399) / 86_400),
            },
        };
        Ok(Self {
            origin: first.div_euclid(step) * step,
            step,
        })
    }
}

/// The series of `node` the caller may see (as its history: the unit's visibility): from the output's
/// stored window aggregates when they can answer ([`stored_points`]), else from its raw history.
pub async fn series(
    services: &Services,
    actor: &Actor,
    node: Uuid,
    request: SeriesRequest,
) -> Result<Series> {
    let (node, _) = visible_node(services, actor, node).await?;
    let grid = Grid::plan(&request)?;
    let points = match stored_points(services.db(), &node, grid, &request).await? {
        Some(points) => points,
        None => raw_points(services.db(), node.uuid, grid, &request).await?,
    };
    Ok(Series {
        step_seconds: grid.step,
        points,
    })
}

/// The buckets from `node`'s stored window aggregates (processing), when one of its windows divides the
/// step and that series reaches back to the range's first window: a day at one-minute steps then reads
/// 1,440 rows instead of every sample, and the series outlives a short raw history. Buckets are whole
/// windows. MEDIAN only when a window is the step (medians do not combine); COUNT and LAST always come
/// from the raw history (they count text samples, and need the sample itself).
async fn stored_points(
    db: &impl ConnectionTrait,
    node: &unit_nodes::Model,
    grid: Grid,
    request: &SeriesRequest,
) -> Result<Option<Vec<Point>>> {
    if matches!(request.aggregate, Aggregate::Count | Aggregate::Last) {
        return Ok(None);
    }
    let Some(processing) = Processing::of(node) else {
        return Ok(None);
    };
    let Some(window) = processing
        .windows
        .iter()
        .map(|w| w.seconds)
        .filter(|&w| {
            let w = i64::from(w);
            grid.step % w == 0 && (request.aggregate != Aggregate::Median || w == grid.step)
        })
        .max()
    else {
        return Ok(None);
    };
    let seconds = i64::from(window);
    let first = request.from.timestamp().div_euclid(seconds) * seconds;
    let Some(from) = DateTime::from_timestamp(first, 0) else {
        return Ok(None);
    };
    match aggregates::first_window_start(db, node.uuid, window).await? {
        Some(oldest) if oldest <= from => {}
        _ => return Ok(None),
    }
    let rows = aggregates::aggregate_series(db, node.uuid, window, from, request.to).await?;
    // (bucket, count, sum, min, max, median): rows come oldest first, so buckets do too.
    let mut buckets: Vec<(i64, i64, f64, f64, f64, f64)> = Vec::new();
    for row in rows {
        let bucket = (row.window_start.timestamp() - grid.origin).div_euclid(grid.step);
        match buckets.last_mut() {
            Some(last) if last.0 == bucket => {
                last.1 += row.count;
                last.2 += row.sum;
                last.3 = last.3.min(row.min);
                last.4 = last.4.max(row.max);
            }
            _ => buckets.push((bucket, row.count, row.sum, row.min, row.max, row.median)),
        }
    }
    let points = buckets
        .into_iter()
        .filter(|b| b.1 > 0)
        .filter_map(|(bucket, count, sum, min, max, median)| {
            let value = match request.aggregate {
                Aggregate::Avg => sum / count as f64,
                Aggregate::Min => min,
                Aggregate::Max => max,
                Aggregate::Sum => sum,
                _ => median,
            };
            let time = DateTime::from_timestamp(grid.origin + bucket * grid.step, 0)
                .filter(|_| value.is_finite())?;
            Some(Point {
                time,
                value,
                count: u64::try_from(count).unwrap_or(0),
            })
        })
        .collect();
    Ok(Some(points))
}

/// A JSON number in a stored value as a double, NULL otherwise (and for numbers too large for a double).
/// SQLite checks it with JSON1 (each `CASE` only evaluates what it needs, so malformed JSON never reaches
/// `json_type`) and drops what would be infinite; PostgreSQL uses a pattern whose digit counts keep the
/// number inside a double's range (a cast past it would fail the whole query).
fn numeric(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            r"CASE WHEN value ~ '^-?(0|[1-9][0-9]{0,99})(\.[0-9]{1,100})?([eE][-+]?[0-9]{1,2})?$' THEN CAST(value AS DOUBLE PRECISION) END"
        }
        _ => {
            "CASE WHEN json_valid(value) THEN CASE WHEN json_type(value) IN ('integer', 'real') \
             AND abs(CAST(value AS DOUBLE PRECISION)) < 1e300 THEN CAST(value AS DOUBLE PRECISION) END END"
        }
    }
}

/// Whole seconds since the epoch of `created_at` (stored as `timestamptz` on PostgreSQL, RFC 3339 text on
/// SQLite).
fn epoch(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "CAST(floor(extract(epoch FROM created_at)) AS BIGINT)",
        _ => "CAST(strftime('%s', created_at) AS BIGINT)",
    }
}

/// The buckets of `node`'s raw history, one row each from the database. Served by the
/// `(unit_node_uuid, created_at)` index: the range's samples are read in one index range scan.
async fn raw_points(
    db: &impl ConnectionTrait,
    node: Uuid,
    grid: Grid,
    request: &SeriesRequest,
) -> Result<Vec<Point>> {
    let backend = db.get_database_backend();
    // Numbered on both: the bucket's parameters come before the range's in the statement's text.
    let mark = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    };
    let range = format!(
        "unit_node_uuid = {} AND created_at >= {} AND created_at < {}",
        mark(1),
        mark(2),
        mark(3)
    );
    let mut values: Vec<Value> = vec![node.into(), request.from.into(), request.to.into()];
    if request.aggregate == Aggregate::Median {
        let bound = MEDIAN_MAX_SAMPLES + 1;
        let count = Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM unit_node_values WHERE {range} LIMIT {bound}) s"
            ),
            values.clone(),
        );
        let held: i64 = match db.query_one_raw(count).await? {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        if held > MEDIAN_MAX_SAMPLES as i64 {
            return Err(invalid(
                "aggregate",
                format!(
                    "MEDIAN sorts at most {MEDIAN_MAX_SAMPLES} samples and this range holds more: \
                     narrow it, or use AVG"
                ),
            ));
        }
    }
    values.push(grid.origin.into());
    values.push(grid.step.into());
    let rows = format!(
        "SELECT CAST(({epoch} - {origin}) / {step} AS BIGINT) AS bucket, {number} AS v, created_at, id \
         FROM unit_node_values WHERE {range}",
        epoch = epoch(backend),
        number = numeric(backend),
        origin = mark(4),
        step = mark(5),
    );
    let sql = match request.aggregate {
        Aggregate::Avg | Aggregate::Min | Aggregate::Max | Aggregate::Sum => {
            let function = match request.aggregate {
                Aggregate::Avg => "AVG",
                Aggregate::Min => "MIN",
                Aggregate::Max => "MAX",
                _ => "SUM",
            };
            format!(
                "SELECT bucket, CAST({function}(v) AS DOUBLE PRECISION) AS value, COUNT(*) AS n \
                 FROM ({rows}) s WHERE v IS NOT NULL GROUP BY bucket ORDER BY bucket"
            )
        }
        Aggregate::Count => format!(
            "SELECT bucket, CAST(COUNT(*) AS DOUBLE PRECISION) AS value, COUNT(*) AS n \
             FROM ({rows}) s GROUP BY bucket ORDER BY bucket"
        ),
        Aggregate::Median => format!(
            "SELECT bucket, CAST(AVG(v) AS DOUBLE PRECISION) AS value, MAX(n) AS n FROM ( \
               SELECT bucket, v, ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY v) AS rn, \
                      COUNT(*) OVER (PARTITION BY bucket) AS n \
               FROM ({rows}) s WHERE v IS NOT NULL) t \
             WHERE rn = (n + 1) / 2 OR rn = (n + 2) / 2 GROUP BY bucket ORDER BY bucket"
        ),
        Aggregate::Last => format!(
            "SELECT bucket, v AS value, n FROM ( \
               SELECT bucket, v, \
                      ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY created_at DESC, id DESC) AS rn, \
                      COUNT(*) OVER (PARTITION BY bucket) AS n \
               FROM ({rows}) s WHERE v IS NOT NULL) t \
             WHERE rn = 1 ORDER BY bucket"
        ),
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let mut points = Vec::with_capacity(rows.len());
    for row in rows {
        let bucket: i64 = row.try_get("", "bucket")?;
        let value: f64 = row.try_get("", "value")?;
        let count: i64 = row.try_get("", "n")?;
        let start = grid.origin + bucket * grid.step;
        // A sum can overflow a double: such a point is left out rather than sent as a non-number.
        let Some(time) = DateTime::from_timestamp(start, 0).filter(|_| value.is_finite()) else {
            continue;
        };
        points.push(Point {
            time,
            value,
            count: u64::try_from(count).unwrap_or(0),
        });
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(from: &str, to: &str, max_points: u32, step: Option<u32>) -> SeriesRequest {
        SeriesRequest {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            max_points,
            step_seconds: step,
            aggregate: Aggregate::Avg,
        }
    }

    fn buckets(r: &SeriesRequest, grid: Grid) -> i64 {
        let last = (r.to - Duration::nanoseconds(1)).timestamp();
        (last - grid.origin) / grid.step + 1
    }

    #[test]
    fn a_day_in_1440_points_is_one_minute_steps() {
        let r = request("2026-11-27T00:00:00Z", "2026-11-28T00:00:00Z", 1440, None);
        let grid = Grid::plan(&r).unwrap();
        assert_eq!(grid.step, 60);
        assert_eq!(buckets(&r, grid), 1440);
    }

    #[test]
    fn the_step_always_fits_the_points() {
        for (from, to) in [
            ("2026-11-27T00:00:07.5Z", "2026-11-28T00:00:03Z"),
            ("2026-01-01T00:00:00Z", "2026-11-28T13:17:00Z"),
            ("2020-01-01T00:00:00Z", "2026-11-28T13:17:00Z"),
            ("2026-11-28T00:00:00Z", "2026-11-28T00:00:00.5Z"),
        ] {
            for max in [2, 3, 10, 99, 500, 2000, 5000] {
                for step in [None, Some(1), Some(7), Some(60), Some(86_400)] {
                    let r = request(from, to, max, step);
                    let grid = Grid::plan(&r).unwrap();
                    let n = buckets(&r, grid);
                    assert!(
                        n <= i64::from(max.min(MAX_POINTS)),
                        "{from}..{to} {max} {step:?}: {grid:?} gives {n}"
                    );
                    if let Some(step) = step {
                        assert_eq!(grid.step % i64::from(step), 0);
                        if grid.step > i64::from(step) {
                            let finer = Grid {
                                origin: r.from.timestamp().div_euclid(grid.step - i64::from(step))
                                    * (grid.step - i64::from(step)),
                                step: grid.step - i64::from(step),
                            };
                            assert!(
                                buckets(&r, finer) > i64::from(max.min(MAX_POINTS)),
                                "a finer multiple fits"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(
            Grid::plan(&request(
                "2026-11-28T00:00:00Z",
                "2026-11-28T00:00:00Z",
                10,
                None
            ))
            .is_err()
        );
        assert!(
            Grid::plan(&request(
                "2026-11-28T00:00:00Z",
                "2026-11-29T00:00:00Z",
                1,
                None
            ))
            .is_err()
        );
        assert!(
            Grid::plan(&request(
                "2026-11-28T00:00:00Z",
                "2026-11-29T00:00:00Z",
                10,
                Some(0)
            ))
            .is_err()
        );
    }
}
