//! GraphQL subscriptions (over WebSocket at `/graphql/ws`): values, state, logs and presence of units.
//!
//! Access is checked when subscribing: values and presence of units the caller may see, state and logs
//! of units the caller may change (as in queries).

use std::collections::HashSet;

use async_graphql::{Context, ID, Json, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::error::{Error, GqlResult};
use crate::graphql::{actor, parse_uuid, services};
use crate::services::units::{self, data, live::LiveEvent};

/// A node's new value.
#[derive(SimpleObject, Clone)]
pub struct NodeValueEvent {
    unit_uuid: ID,
    node_uuid: ID,
    value: String,
    at: DateTime<Utc>,
}

/// A unit's new state.
#[derive(SimpleObject, Clone)]
pub struct UnitStateEvent {
    unit_uuid: ID,
    state: Json<Value>,
}

/// A log line.
#[derive(SimpleObject, Clone)]
pub struct UnitLogEvent {
    unit_uuid: ID,
    level: String,
    text: String,
}

/// A unit connected or disconnected.
#[derive(SimpleObject, Clone)]
pub struct UnitPresenceEvent {
    unit_uuid: ID,
    online: bool,
}

/// Checks every requested unit; `private` also requires the right to change it.
async fn allowed(ctx: &Context<'_>, ids: &[ID], private: bool) -> Result<HashSet<Uuid>> {
    let services = services(ctx)?;
    let actor = actor(ctx);
    let mut out = HashSet::new();
    for id in ids {
        let uuid = parse_uuid(id).gql()?;
        let unit = units::get(services, &actor, uuid).await.gql()?;
        if private && !data::may_read_private_data(&actor, &unit) {
            return Err(Error::Forbidden(
                "only the unit's creator and admins see its state and logs".into(),
            ))
            .gql();
        }
        out.insert(uuid);
    }
    Ok(out)
}

/// Events of the allowed units, mapped by `pick`; a lagging subscriber skips ahead.
fn stream<T, F>(
    ctx: &Context<'_>,
    units: HashSet<Uuid>,
    pick: F,
) -> Result<impl Stream<Item = T> + use<T, F>>
where
    T: Send + 'static,
    F: Fn(LiveEvent) -> Option<T> + Send + 'static,
{
    let receiver = services(ctx)?.live().subscribe();
    Ok(futures_util::stream::unfold(
        (receiver, units, pick),
        |(mut rx, units, pick)| async move {
            loop {
                match rx.recv().await {
                    Ok(event) if units.contains(&event.unit()) => {
                        if let Some(item) = pick(event) {
                            return Some((item, (rx, units, pick)));
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    ))
}

#[derive(Default)]
pub struct LiveSubscription;

#[Subscription]
impl LiveSubscription {
    /// New values of the nodes of these units.
    async fn unit_node_values(
        &self,
        ctx: &Context<'_>,
        unit_uuids: Vec<ID>,
    ) -> Result<impl Stream<Item = NodeValueEvent>> {
        let units = allowed(ctx, &unit_uuids, false).await?;
        stream(ctx, units, |event| match event {
            LiveEvent::Value {
                unit,
                node,
                value,
                at,
            } => Some(NodeValueEvent {
                unit_uuid: ID(unit.to_string()),
                node_uuid: ID(node.to_string()),
                value,
                at,
            }),
            _ => None,
        })
    }

    /// New `state/pepeunit` payloads of these units.
    async fn unit_states(
        &self,
        ctx: &Context<'_>,
        unit_uuids: Vec<ID>,
    ) -> Result<impl Stream<Item = UnitStateEvent>> {
        let units = allowed(ctx, &unit_uuids, true).await?;
        stream(ctx, units, |event| match event {
            LiveEvent::State { unit, state } => Some(UnitStateEvent {
                unit_uuid: ID(unit.to_string()),
                state: Json(serde_json::from_str(&state).unwrap_or(Value::Null)),
            }),
            _ => None,
        })
    }

    /// New log lines of these units.
    async fn unit_logs(
        &self,
        ctx: &Context<'_>,
        unit_uuids: Vec<ID>,
    ) -> Result<impl Stream<Item = UnitLogEvent>> {
        let units = allowed(ctx, &unit_uuids, true).await?;
        stream(ctx, units, |event| match event {
            LiveEvent::Log { unit, level, text } => Some(UnitLogEvent {
                unit_uuid: ID(unit.to_string()),
                level,
                text,
            }),
            _ => None,
        })
    }

    /// These units connecting and disconnecting.
    async fn unit_presence(
        &self,
        ctx: &Context<'_>,
        unit_uuids: Vec<ID>,
    ) -> Result<impl Stream<Item = UnitPresenceEvent>> {
        let units = allowed(ctx, &unit_uuids, false).await?;
        stream(ctx, units, |event| match event {
            LiveEvent::Presence { unit, online } => Some(UnitPresenceEvent {
                unit_uuid: ID(unit.to_string()),
                online,
            }),
            _ => None,
        })
    }
}
