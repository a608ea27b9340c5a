//! `GET /api/v1/unit_nodes/{uuid}/series`: a variable's series as a JSON array of
//! `{"time": RFC 3339, "value": number, "count": integer}`, oldest first, the shape Grafana's Infinity
//! data source reads as a time series (a `timestamp` column and a `number` column) or as a table.
//!
//! Authenticated like the CSV export (`Authorization: Bearer`, a session or an API token of any scope;
//! none for a public variable). Query: `from` and `to` as RFC 3339 or milliseconds since the epoch (what
//! Grafana's `${__from}` and `${__to}` give; the last day when left out), `maxPoints`, `step` (seconds)
//! and `aggregate` (`avg`, `min`, `max`, `sum`, `count`, `median`, `last`) as in GraphQL's `series`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::domain::InvalidValue;
use crate::error::{Error, Result};
use crate::services::units::series::{self, Aggregate, DEFAULT_POINTS, SeriesRequest};

/// Every parameter as text, so a bad one is answered in this API's JSON error shape.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    from: Option<String>,
    to: Option<String>,
    max_points: Option<String>,
    step: Option<String>,
    aggregate: Option<String>,
}

fn invalid(field: &'static str, message: &str) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.to_owned(),
    })
}

/// RFC 3339, or milliseconds since the epoch.
fn time(field: &'static str, text: &str) -> Result<DateTime<Utc>> {
    if let Ok(millis) = text.parse::<i64>() {
        return DateTime::from_timestamp_millis(millis)
            .ok_or_else(|| invalid(field, "is out of range"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            invalid(
                field,
                "is neither RFC 3339 nor milliseconds since the epoch",
            )
        })
}

fn number(field: &'static str, text: &str) -> Result<u32> {
    text.parse()
        .map_err(|_| invalid(field, "is not a whole number"))
}

pub async fn get(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let (actor, _) = state.bearer_caller(&headers).await?;
    let node = uuid.parse().map_err(|_| Error::NotFound("unit_node"))?;
    let to = match params.to.as_deref() {
        Some(text) => time("to", text)?,
        None => Utc::now(),
    };
    let from = match params.from.as_deref() {
        Some(text) => time("from", text)?,
        None => to - Duration::days(1),
    };
    let aggregate = match params.aggregate.as_deref() {
        Some(text) => Aggregate::parse(text).ok_or_else(|| {
            invalid(
                "aggregate",
                "is one of avg, min, max, sum, count, median, last",
            )
        })?,
        None => Aggregate::Avg,
    };
    let request = SeriesRequest {
        from,
        to,
        max_points: match params.max_points.as_deref() {
            Some(text) => number("maxPoints", text)?,
            None => DEFAULT_POINTS,
        },
        step_seconds: params
            .step
            .as_deref()
            .map(|text| number("step", text))
            .transpose()?,
        aggregate,
    };
    let series = series::series(&state.services, &actor, node, request).await?;
    let rows: Vec<Value> = series
        .points
        .iter()
        .map(|p| {
            json!({
                "time": p.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                "value": p.value,
                "count": p.count,
            })
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}
