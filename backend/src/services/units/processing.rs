//! Processing of an output variable: filters that decide, before anything is stored or routed, whether a
//! sample is kept, and the aggregate windows (with their retention) its kept numeric samples feed.
//!
//! The settings are JSON on the node row (`unit_nodes.processing`), so ingestion has them with the node it
//! already loads for each batch; a node without settings keeps every value and aggregates nothing.
//! Filters run in this order: type, range, repeat, rate — so a repeat or a value out of range never uses
//! up the rate. What they turn away is counted per node and reason (the PUBACK or 2xx still says
//! "received"), never stored, never routed to linked inputs.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::InvalidValue;
use crate::entities::unit_nodes;
use crate::error::{Error, Result};

/// Shortest aggregate window.
pub const WINDOW_MIN_SECONDS: u32 = 60;
/// Longest aggregate window.
pub const WINDOW_MAX_SECONDS: u32 = 86_400;
/// Most aggregate windows on one output.
pub const WINDOWS_MAX: usize = 8;
/// Most rows one aggregate series keeps, and what it keeps when its owner says nothing.
pub const KEEP_COUNT_MAX: u32 = 100_000;
pub const KEEP_COUNT_DEFAULT: u32 = 10_000;
/// Longest an aggregate row may be kept by age: ten years.
pub const KEEP_SECONDS_MAX: u32 = 3650 * 86_400;
/// The longest period of a rate limit: a day.
pub const RATE_PERIOD_MAX_SECONDS: u32 = 86_400;

/// What kind of value an output accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Anything (the default).
    #[default]
    Any,
    /// A finite decimal number (`21.5`, `-3`, `1e3`; spaces around it are allowed).
    Number,
    /// Text: any valid UTF-8 (raw binary is turned away).
    Text,
    /// A JSON document (object, array, string in quotes, number, `true`, `false`, `null`).
    Json,
}

/// At most `samples` accepted per `per_seconds` (a token bucket: a burst of `samples`, then the rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub samples: u32,
    pub per_seconds: u32,
}

/// One tumbling-window aggregate series and how long it keeps its rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// The window's length; windows start at multiples of it since the Unix epoch (UTC).
    pub seconds: u32,
    /// Most rows kept (the newest windows).
    pub keep_count: u32,
    /// Rows whose window started longer ago than this go (none: only `keep_count` applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_seconds: Option<u32>,
}

/// An output's processing settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Processing {
    #[serde(default)]
    pub value_type: ValueType,
    /// Numbers below this are turned away (values that are not numbers are left to the type filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Numbers above this are turned away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<Rate>,
    /// A value equal to the last accepted one is turned away.
    #[serde(default)]
    pub deduplicate: bool,
    #[serde(default)]
    pub windows: Vec<WindowSpec>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Validation(InvalidValue::new("processing", message))
}

impl Processing {
    /// The node's settings; none when it has none (or, never expected, unreadable ones: logged).
    pub fn of(node: &unit_nodes::Model) -> Option<Self> {
        let text = node.processing.as_deref()?;
        match serde_json::from_str(text) {
            Ok(processing) => Some(processing),
            Err(error) => {
                tracing::warn!(node = %node.uuid, %error, "unreadable processing settings ignored");
                None
            }
        }
    }

    /// Whether these settings do anything at all.
    pub fn is_noop(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the bounds; windows come back sorted by length.
    pub fn validated(mut self) -> Result<Self> {
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if !finite(self.min) || !finite(self.max) {
            return Err(invalid("min and max must be finite numbers"));
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(invalid("min must not be above max"));
        }
        if let Some(rate) = self.max_rate
            && (rate.samples == 0
                || rate.per_seconds == 0
                || rate.per_seconds > RATE_PERIOD_MAX_SECONDS)
        {
            return Err(invalid(format!(
                "a maximum rate needs at least one sample per 1 to {RATE_PERIOD_MAX_SECONDS} seconds"
            )));
        }
        if self.windows.len() > WINDOWS_MAX {
            return Err(invalid(format!("at most {WINDOWS_MAX} aggregate windows")));
        }
        self.windows.sort_by_key(|w| w.seconds);
        if self
            .windows
            .windows(2)
            .any(|w| w[0].seconds == w[1].seconds)
        {
            return Err(invalid("each aggregate window length at most once"));
        }
        for window in &self.windows {
            if !(WINDOW_MIN_SECONDS..=WINDOW_MAX_SECONDS).contains(&window.seconds) {
                return Err(invalid(format!(
                    "aggregate windows are {WINDOW_MIN_SECONDS} to {WINDOW_MAX_SECONDS} seconds long"
                )));
            }
            if !(1..=KEEP_COUNT_MAX).contains(&window.keep_count) {
                return Err(invalid(format!(
                    "an aggregate series keeps 1 to {KEEP_COUNT_MAX} rows"
                )));
            }
            if let Some(keep) = window.keep_seconds
                && !(window.seconds..=KEEP_SECONDS_MAX).contains(&keep)
            {
                return Err(invalid(format!(
                    "an aggregate series keeps its rows from one window length to {KEEP_SECONDS_MAX} seconds"
                )));
            }
        }
        Ok(self)
    }

    /// The stored form: none for settings that do nothing.
    pub fn column(&self) -> Result<Option<String>> {
        if self.is_noop() {
            return Ok(None);
        }
        serde_json::to_string(self)
            .map(Some)
            .map_err(Error::internal)
    }
}

/// Why a sample was not stored, or (the last two) not aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not of the output's value type.
    Type,
    /// A number outside the output's range.
    Range,
    /// Over the output's maximum rate.
    Rate,
    /// The same as the last accepted value.
    Duplicate,
    /// Stored, but not aggregated: not a number.
    NotNumeric,
    /// Stored, but not aggregated by a window that had already moved past the sample's time.
    Late,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Type,
        Reason::Range,
        Reason::Rate,
        Reason::Duplicate,
        Reason::NotNumeric,
        Reason::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Type => "type",
            Reason::Range => "range",
            Reason::Rate => "rate",
            Reason::Duplicate => "duplicate",
            Reason::NotNumeric => "not_numeric",
            Reason::Late => "late",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// The `/metrics` label of a rejection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Samples turned away by a filter or skipped by aggregation, by reason, over all nodes (per node they are
/// in the database: a label per node would grow `/metrics` without bound).
pub static REJECTED: LazyLock<Family<ReasonLabels, Counter>> = LazyLock::new(Family::default);

/// A value as a number, if it is one.
pub fn number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// What the filters keep between batches: each rate-limited node's token bucket. Lost on a restart (a
/// restarted server starts every bucket full), which errs towards accepting.
#[derive(Default)]
pub struct FilterState {
    buckets: HashMap<Uuid, Bucket>,
}

/// A rate-limited node's tokens as of `at`.
#[derive(Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FilterState {
    /// Whether `value` (with `utf8`: whether its bytes were valid UTF-8) passes `processing`'s filters
    /// after `last`, the last accepted value; takes a token of the node's rate when it does.
    pub fn check(
        &mut self,
        node: Uuid,
        processing: &Processing,
        value: &str,
        utf8: bool,
        last: Option<&str>,
        now: Instant,
    ) -> std::result::Result<(), Reason> {
        let typed = match processing.value_type {
            ValueType::Any => true,
            ValueType::Number => number(value).is_some(),
            ValueType::Text => utf8,
            ValueType::Json => utf8 && serde_json::from_str::<serde::de::IgnoredAny>(value).is_ok(),
        };
        if !typed {
            return Err(Reason::Type);
        }
        if (processing.min.is_some() || processing.max.is_some())
            && let Some(v) = number(value)
            && (processing.min.is_some_and(|min| v < min)
                || processing.max.is_some_and(|max| v > max))
        {
            return Err(Reason::Range);
        }
        if processing.deduplicate && last == Some(value) {
            return Err(Reason::Duplicate);
        }
        if let Some(rate) = processing.max_rate {
            let capacity = f64::from(rate.samples);
            let per_second = capacity / f64::from(rate.per_seconds);
            let bucket = self.buckets.entry(node).or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
            bucket.at = now;
            if bucket.tokens < 1.0 {
                return Err(Reason::Rate);
            }
            bucket.tokens -= 1.0;
        }
        Ok(())
    }

    /// A copy of the buckets of `nodes`, to put back with [`Self::restore`] if the batch that used them is
    /// written again (so a retried batch does not use up the rate twice).
    pub fn snapshot(&self, nodes: impl IntoIterator<Item = Uuid>) -> Vec<(Uuid, Option<Bucket>)> {
        nodes
            .into_iter()
            .map(|node| (node, self.buckets.get(&node).copied()))
            .collect()
    }

    pub fn restore(&mut self, snapshot: Vec<(Uuid, Option<Bucket>)>) {
        for (node, bucket) in snapshot {
            match bucket {
                Some(bucket) => self.buckets.insert(node, bucket),
                None => self.buckets.remove(&node),
            };
        }
    }

    /// Forgets buckets full again by now (they would start full anyway), so the map holds only nodes
    /// that were recently limited.
    pub fn forget_idle(&mut self, idle: std::time::Duration) {
        let now = Instant::now();
        self.buckets
            .retain(|_, bucket| now.saturating_duration_since(bucket.at) < idle);
    }
}
