//! REST ingestion for devices without MQTT: `POST /api/v1/units/{uuid}/values` with the unit's own token
//! (`x-auth-token` or `Authorization: Bearer`) and a JSON array of `{"output", "value", "time"?}`.
//!
//! The same rules as a unit's MQTT publishes: only the unit's own outputs, the same value size, the same
//! group commit (a 2xx means every value is committed) and the same routing to linked inputs. The whole
//! batch is checked before anything is stored, so a bad item is named in a 4xx and nothing is written.
//! Each unit has its own token bucket of values per second (`rest_values_rate`, `rest_values_burst`): one
//! unit posting flat out is refused with 429 and `Retry-After`, and never slows the others.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use crate::broker::posted::PostedValue;
use crate::domain::InvalidValue;
use crate::error::{Error, Result};
use crate::limits::TokenBucket;
use crate::services::units::device::{self, DeviceCaller};
use crate::services::units::nodes::{self, NodeKind};
use crate::services::units::schema_json::node_topic;

/// How far in the future a value's `time` may be: clocks of small devices drift.
const CLOCK_SKEW_SECONDS: i64 = 60;
/// Units with a bucket before idle ones (full again) are forgotten.
const BUCKETS_KEPT: usize = 4096;

/// The per-unit limits of REST ingestion.
pub struct ValueLimits {
    rate: f64,
    burst: f64,
    /// Most values in one request.
    pub max_batch: usize,
    buckets: Mutex<HashMap<Uuid, TokenBucket>>,
}

impl ValueLimits {
    pub fn new(rate: u32, burst: u32, max_batch: usize) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_batch: max_batch.max(1),
            buckets: Mutex::default(),
        }
    }

    /// Takes `count` values from `unit`'s bucket, or says how long to wait.
    fn take(&self, unit: Uuid, count: usize) -> std::result::Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= BUCKETS_KEPT && !buckets.contains_key(&unit) {
            buckets.retain(|_, bucket| !bucket.is_full());
        }
        let bucket = buckets
            .entry(unit)
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst));
        let count = count as f64;
        if bucket.take(count) {
            Ok(())
        } else {
            Err(bucket.wait_for(count).as_secs_f64().ceil().max(1.0) as u64)
        }
    }
}

/// One posted value as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    /// The output's topic name as in the unit's schema (`current_temp/pepeunit`), or its node uuid.
    output: String,
    /// Text as it is; a number, boolean, object or array as its JSON text.
    value: Value,
    /// When it was measured (RFC 3339); now when absent.
    #[serde(default)]
    time: Option<DateTime<Utc>>,
}

fn invalid(index: usize, message: impl std::fmt::Display) -> Error {
    Error::Validation(InvalidValue {
        field: "values",
        message: format!("item {index}: {message}"),
    })
}

/// The bytes a value is stored and delivered as.
fn payload(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

/// The body as a batch of values; its first problem otherwise.
fn parse(body: &[u8], max_batch: usize) -> Result<Vec<Posted>> {
    let posted: Vec<Posted> = serde_json::from_slice(body).map_err(|error| {
        Error::Validation(InvalidValue {
            field: "values",
            message: format!(
                "the body must be a JSON array of {{\"output\", \"value\", \"time\"?}}: {error}"
            ),
        })
    })?;
    if posted.is_empty() {
        return Err(Error::Validation(InvalidValue {
            field: "values",
            message: "the batch is empty".into(),
        }));
    }
    if posted.len() > max_batch {
        return Err(Error::Validation(InvalidValue {
            field: "values",
            message: format!(
                "{} values in one request; at most {max_batch} (rest_values_max_batch)",
                posted.len()
            ),
        }));
    }
    Ok(posted)
}

pub async fn post(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let unit: Uuid = uuid.parse().map_err(|_| Error::NotFound("unit"))?;
    let token = super::device::token(&headers).ok_or(Error::Unauthenticated)?;
    match device::authenticate(&state.services, token).await? {
        DeviceCaller::Unit { uuid, .. } if uuid == unit => {}
        DeviceCaller::Unit { .. } => {
            return Err(Error::Forbidden(
                "a unit may post values only to its own outputs".into(),
            ));
        }
        DeviceCaller::User(_) => {
            return Err(Error::Forbidden(
                "values are posted with the unit's own token, not a user's".into(),
            ));
        }
    }
    let body = match state.read_body(body, "the body").await {
        Ok(body) => body,
        Err(too_large) => return Ok(too_large),
    };
    let posted = parse(&body, state.values.max_batch)?;

    let domain = state.services.units().endpoint.domain.clone();
    let outputs: HashMap<String, (Uuid, String)> = nodes::of_unit(state.services.db(), unit)
        .await?
        .into_iter()
        .filter(|node| NodeKind::of(node) == NodeKind::Output)
        .flat_map(|node| {
            let topic = node_topic(&domain, node.uuid, &node.topic_name);
            [
                (node.topic_name.clone(), (node.uuid, topic.clone())),
                (node.uuid.to_string(), (node.uuid, topic)),
            ]
        })
        .collect();
    let now = Utc::now();
    let mut values = Vec::with_capacity(posted.len());
    for (index, item) in posted.into_iter().enumerate() {
        let Some((node, topic)) = outputs.get(&item.output) else {
            return Err(invalid(
                index,
                format!("this unit has no output {:?}", item.output),
            ));
        };
        let at = item.time.unwrap_or(now);
        if at > now + chrono::Duration::seconds(CLOCK_SKEW_SECONDS) {
            return Err(invalid(index, format!("time {at} is in the future")));
        }
        let Some(payload) = payload(item.value) else {
            return Err(invalid(index, "value is null"));
        };
        if !state.broker.value_fits(&payload) {
            return Err(invalid(
                index,
                format!(
                    "value of {} bytes is larger than unit_value_max_bytes",
                    payload.len()
                ),
            ));
        }
        values.push(PostedValue {
            node: *node,
            topic: topic.clone(),
            payload,
            at,
        });
    }
    let count = values.len();
    if let Err(retry_after_seconds) = state.values.take(unit, count) {
        state.broker.limit_counters().hit("rest_values_rate", &unit);
        return Err(Error::RateLimited {
            retry_after_seconds,
        });
    }
    let Some(filtered) = state.broker.publish_values(unit, values).await else {
        return Err(Error::Unavailable(
            "the values could not be stored; send them again".into(),
        ));
    };
    // Values the output's processing filters turned away were received (and counted) but not stored.
    Ok(Json(json!({ "stored": count - filtered, "filtered": filtered })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_are_text_or_json_text() {
        assert_eq!(payload(json!("21.5")), Some(b"21.5".to_vec()));
        assert_eq!(payload(json!(21.5)), Some(b"21.5".to_vec()));
        assert_eq!(payload(json!(true)), Some(b"true".to_vec()));
        assert_eq!(payload(json!({"a": 1})), Some(br#"{"a":1}"#.to_vec()));
        assert_eq!(payload(Value::Null), None);
    }

    #[test]
    fn a_batch_is_a_non_empty_bounded_array_of_known_fields() {
        let ok = parse(
            br#"[{"output":"t/pepeunit","value":1,"time":"2026-11-28T10:00:00Z"}]"#,
            10,
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert!(ok[0].time.is_some());
        for bad in [
            &b"[]"[..],
            b"{}",
            b"[{\"output\":\"t\"}]",
            b"[{\"output\":\"t\",\"value\":1,\"extra\":2}]",
            b"[{\"output\":\"t\",\"value\":1,\"time\":\"yesterday\"}]",
        ] {
            assert!(parse(bad, 10).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let eleven = format!("[{}]", [r#"{"output":"t","value":1}"#; 11].join(","));
        assert!(parse(eleven.as_bytes(), 10).is_err());
    }

    proptest! {
        /// Any bytes are either a batch or a validation error: never a panic.
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body, 1000);
        }

        /// Any posted text value is stored as exactly its bytes.
        #[test]
        fn text_values_round_trip(text in ".{0,64}") {
            let body = serde_json::to_vec(&json!([{ "output": "o", "value": text }])).unwrap();
            let posted = parse(&body, 1).unwrap();
            prop_assert_eq!(payload(posted.into_iter().next().unwrap().value), Some(text.into_bytes()));
        }
    }

    #[test]
    fn a_unit_over_its_rate_waits_and_others_do_not() {
        let limits = ValueLimits::new(10, 100, 1000);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(limits.take(a, 100).is_ok());
        assert!(limits.take(a, 50).unwrap_err() >= 1);
        assert!(limits.take(b, 100).is_ok());
    }
}
