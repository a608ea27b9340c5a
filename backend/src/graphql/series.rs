//! `series`: a variable's history downsampled on the server into at most `maxPoints` buckets, for charts.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use crate::error::GqlResult;
use crate::graphql::{actor, parse_uuid, services};
use crate::services::units::series::{
    self as service, Aggregate, DEFAULT_POINTS, MAX_POINTS, SeriesRequest,
};

/// How the samples of a bucket become its value.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum SeriesAggregate {
    Avg,
    Min,
    Max,
    Sum,
    /// Every sample, numeric or not.
    Count,
    /// The exact median (the mean of the two middle samples when their number is even).
    Median,
    /// The bucket's newest sample.
    Last,
}

impl From<SeriesAggregate> for Aggregate {
    fn from(aggregate: SeriesAggregate) -> Self {
        match aggregate {
            SeriesAggregate::Avg => Aggregate::Avg,
            SeriesAggregate::Min => Aggregate::Min,
            SeriesAggregate::Max => Aggregate::Max,
            SeriesAggregate::Sum => Aggregate::Sum,
            SeriesAggregate::Count => Aggregate::Count,
            SeriesAggregate::Median => Aggregate::Median,
            SeriesAggregate::Last => Aggregate::Last,
        }
    }
}

/// One bucket of a series.
#[derive(SimpleObject)]
pub struct SeriesPoint {
    /// When the bucket starts.
    time: DateTime<Utc>,
    value: f64,
    /// How many samples the bucket holds.
    count: u64,
}

/// The buckets of a range that hold samples, oldest first.
#[derive(SimpleObject)]
pub struct Series {
    /// The width of each bucket: the `step` asked for, widened to a multiple of it when the range would
    /// need more than `maxPoints` buckets; a round step chosen by the server when none was asked for.
    step_seconds: i64,
    points: Vec<SeriesPoint>,
}

/// What a series costs: each point it may return costs what is asked of it, plus the database query.
fn series_cost(max_points: u32, child_complexity: usize) -> usize {
    let points = max_points.clamp(1, MAX_POINTS) as usize;
    points
        .saturating_mul(child_complexity)
        .saturating_add(super::QUERY_COST)
}

#[derive(Default)]
pub struct SeriesQuery;

#[Object]
impl SeriesQuery {
    /// A variable's numeric history from `from` (inclusive) to `to` (exclusive), in at most `maxPoints`
    /// buckets (2 to 2000; more are 2000) of `stepSeconds` aligned to the Unix epoch; empty buckets are
    /// left out. Samples that are not JSON numbers count only for `COUNT`. Visible as the variable is.
    /// An output with processing windows answers AVG/MIN/MAX/SUM from its stored window aggregates when a
    /// window divides the step (MEDIAN when one equals it), and its series reaches back to `from`.
    // A GraphQL field's arguments are its parameters: one each, as the schema shows them.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "series_cost(max_points, child_complexity)")]
    async fn series(
        &self,
        ctx: &Context<'_>,
        node_uuid: ID,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[graphql(default_with = "DEFAULT_POINTS")] max_points: u32,
        step_seconds: Option<u32>,
        #[graphql(default_with = "SeriesAggregate::Avg")] aggregate: SeriesAggregate,
    ) -> Result<Series> {
        let node = parse_uuid(&node_uuid).gql()?;
        let request = SeriesRequest {
            from,
            to,
            max_points,
            step_seconds,
            aggregate: aggregate.into(),
        };
        let series = service::series(services(ctx)?, &actor(ctx), node, request)
            .await
            .gql()?;
        Ok(Series {
            step_seconds: series.step_seconds,
            points: series
                .points
                .into_iter()
                .map(|p| SeriesPoint {
                    time: p.time,
                    value: p.value,
                    count: p.count,
                })
                .collect(),
        })
    }
}
