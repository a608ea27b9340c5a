//! An output's processing in GraphQL: its filters and aggregate windows (set through `updateUnitNode`),
//! the samples its filters turned away, and its aggregate series.

use async_graphql::{Enum, InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use crate::services::units::aggregates::AggregateRow;
use crate::services::units::processing::{
    self as service, KEEP_COUNT_DEFAULT, Processing, Rate, Reason, WindowSpec,
};

/// What kind of value an output accepts.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Anything.
    Any,
    /// A finite decimal number.
    Number,
    /// Valid UTF-8 text.
    Text,
    /// A JSON document.
    Json,
}

impl From<service::ValueType> for ValueType {
    fn from(value: service::ValueType) -> Self {
        match value {
            service::ValueType::Any => Self::Any,
            service::ValueType::Number => Self::Number,
            service::ValueType::Text => Self::Text,
            service::ValueType::Json => Self::Json,
        }
    }
}

impl From<ValueType> for service::ValueType {
    fn from(value: ValueType) -> Self {
        match value {
            ValueType::Any => Self::Any,
            ValueType::Number => Self::Number,
            ValueType::Text => Self::Text,
            ValueType::Json => Self::Json,
        }
    }
}

/// At most `samples` values accepted per `perSeconds` (a burst of `samples`, then that rate).
#[derive(SimpleObject, InputObject, Clone, Copy)]
#[graphql(input_name = "MaxRateInput")]
pub struct MaxRate {
    samples: u32,
    per_seconds: u32,
}

/// One tumbling-window aggregate series and its retention.
#[derive(SimpleObject)]
pub struct AggregateWindow {
    /// The window's length in seconds; windows start at multiples of it since the Unix epoch.
    seconds: u32,
    /// Most rows kept, the newest.
    keep_count: u32,
    /// Rows of windows that started longer ago than this go (none: only `keepCount` applies).
    keep_seconds: Option<u32>,
}

/// One tumbling-window aggregate series to keep.
#[derive(InputObject)]
pub struct AggregateWindowInput {
    /// The window's length, 60 to 86,400 seconds; windows start at multiples of it since the Unix epoch.
    seconds: u32,
    /// Most rows kept, the newest: 1 to 100,000 (10,000 unless given).
    #[graphql(default_with = "KEEP_COUNT_DEFAULT")]
    keep_count: u32,
    /// Rows of windows that started longer ago than this go (none: only `keepCount` applies); from one
    /// window length to ten years.
    keep_seconds: Option<u32>,
}

/// An output's processing: filters applied before anything is stored, and aggregate windows.
#[derive(SimpleObject)]
pub struct UnitNodeProcessing {
    value_type: ValueType,
    /// Numbers below it are turned away.
    min: Option<f64>,
    /// Numbers above it are turned away.
    max: Option<f64>,
    max_rate: Option<MaxRate>,
    /// Whether a value equal to the last accepted one is turned away.
    deduplicate: bool,
    windows: Vec<AggregateWindow>,
}

impl From<Processing> for UnitNodeProcessing {
    fn from(p: Processing) -> Self {
        Self {
            value_type: p.value_type.into(),
            min: p.min,
            max: p.max,
            max_rate: p.max_rate.map(|r| MaxRate {
                samples: r.samples,
                per_seconds: r.per_seconds,
            }),
            deduplicate: p.deduplicate,
            windows: p
                .windows
                .into_iter()
                .map(|w| AggregateWindow {
                    seconds: w.seconds,
                    keep_count: w.keep_count,
                    keep_seconds: w.keep_seconds,
                })
                .collect(),
        }
    }
}

/// An output's new processing, replacing what it had (all defaults: store everything, aggregate nothing).
#[derive(InputObject)]
pub struct UnitNodeProcessingInput {
    #[graphql(default_with = "ValueType::Any")]
    value_type: ValueType,
    min: Option<f64>,
    max: Option<f64>,
    max_rate: Option<MaxRate>,
    #[graphql(default)]
    deduplicate: bool,
    #[graphql(default)]
    windows: Vec<AggregateWindowInput>,
}

impl From<UnitNodeProcessingInput> for Processing {
    fn from(input: UnitNodeProcessingInput) -> Self {
        Self {
            value_type: input.value_type.into(),
            min: input.min,
            max: input.max,
            max_rate: input.max_rate.map(|r| Rate {
                samples: r.samples,
                per_seconds: r.per_seconds,
            }),
            deduplicate: input.deduplicate,
            windows: input
                .windows
                .into_iter()
                .map(|w| WindowSpec {
                    seconds: w.seconds,
                    keep_count: w.keep_count,
                    keep_seconds: w.keep_seconds,
                })
                .collect(),
        }
    }
}

/// Why samples were turned away (the first four: not stored, not routed) or not aggregated (the last two).
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RejectionReason {
    /// Not of the output's value type.
    Type,
    /// A number outside the output's range.
    Range,
    /// Over the output's maximum rate.
    Rate,
    /// Equal to the last accepted value.
    Duplicate,
    /// Stored but not aggregated: not a number.
    NotNumeric,
    /// Stored but not aggregated by a window that had already moved past the sample's time.
    Late,
}

impl From<Reason> for RejectionReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Type => Self::Type,
            Reason::Range => Self::Range,
            Reason::Rate => Self::Rate,
            Reason::Duplicate => Self::Duplicate,
            Reason::NotNumeric => Self::NotNumeric,
            Reason::Late => Self::Late,
        }
    }
}

/// How many samples of an output one reason turned away, since it was created.
#[derive(SimpleObject)]
pub struct Rejection {
    reason: RejectionReason,
    count: i64,
}

impl Rejection {
    pub fn new(reason: Reason, count: i64) -> Self {
        Self {
            reason: reason.into(),
            count,
        }
    }
}

/// One window of an aggregate series.
#[derive(SimpleObject)]
pub struct Aggregate {
    window_start: DateTime<Utc>,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    avg: f64,
    /// The exact median of the window's samples.
    median: f64,
}

impl From<AggregateRow> for Aggregate {
    fn from(row: AggregateRow) -> Self {
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
