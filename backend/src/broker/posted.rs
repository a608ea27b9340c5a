//! Values a unit posts over HTTP (`POST /api/v1/units/{uuid}/values`) take the path of its QoS 1 publishes:
//! the same group commit, and once committed the same routing to subscribers (linked inputs), in order.
//! The HTTP edge authenticates the unit and resolves its outputs; nothing here knows about HTTP.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Broker;
use super::acl::Sink;
use super::ingest::{Item, Outcome};

/// One value of one of the unit's outputs.
#[derive(Debug)]
pub struct PostedValue {
    /// The output's node.
    pub node: Uuid,
    /// The output's topic, where subscribers get the value.
    pub topic: String,
    pub payload: Vec<u8>,
    pub at: DateTime<Utc>,
}

impl Broker {
    /// Whether `payload` is within the size a stored value may have.
    pub fn value_fits(&self, payload: &[u8]) -> bool {
        payload.len() <= self.services.units().value_max_bytes
    }

    /// Stores `values` of `unit` and, once every one is committed, routes each its output's filters kept
    /// to its subscribers in the order given; how many the filters turned away. `None`: not all were
    /// stored (a database failure), and none was routed: the caller answers an error and the device
    /// sends them again, as it would an unacknowledged QoS 1 publish.
    pub async fn publish_values(&self, unit: Uuid, values: Vec<PostedValue>) -> Option<usize> {
        let mut commits = Vec::with_capacity(values.len());
        let mut routes = Vec::with_capacity(values.len());
        for value in values {
            let item = Item {
                unit,
                sink: Sink::Value(value.node),
                payload: value.payload.clone(),
                at: value.at,
            };
            // Each submit waits only while this unit's own backlog is over its budget.
            commits.push(self.ingestor.submit(item).await);
            routes.push((value.topic, value.payload));
        }
        let mut outcomes = Vec::with_capacity(commits.len());
        for committed in commits {
            match committed.await {
                Ok(outcome @ (Outcome::Stored | Outcome::Filtered)) => outcomes.push(outcome),
                _ => return None,
            }
        }
        let mut filtered = 0;
        for ((topic, payload), outcome) in routes.into_iter().zip(outcomes) {
            if outcome == Outcome::Stored {
                self.route_all(&topic, &payload, false).await;
            } else {
                filtered += 1;
            }
        }
        Some(filtered)
    }
}
