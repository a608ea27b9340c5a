//! What one unit may publish and subscribe to, read from the database (the spec's rules):
//! publish to its own outputs and `output_base_topic` topics, subscribe to its own inputs, its
//! `input_base_topic` topics and the outputs linked to its inputs. Exact topics only: no wildcards.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pepeunit_protocol::schema::{INPUT_BASE_TOPICS, OUTPUT_BASE_TOPICS};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::entities::unit_nodes;
use crate::error::Result;
use crate::services::Services;
use crate::services::units::nodes::{NodeKind, of_unit};
use crate::services::units::schema_json::{linked_outputs, node_topic};

/// Where a unit's publish goes in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// An output node's value.
    Value(Uuid),
    /// `state/pepeunit`.
    State,
    /// `log/pepeunit`.
    Log,
}

/// One unit's permissions. Its standard topics (`<domain>/input_base_topic/<unit>/<name>` and
/// `.../output_base_topic/...`) are recognised by their shape rather than held as strings: every
/// connected unit keeps its permissions for the life of its connection.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    unit: Uuid,
    domain: Arc<str>,
    /// The unit's outputs.
    publish: HashMap<String, Sink>,
    /// The unit's inputs and the outputs linked to them.
    subscribe: HashSet<String>,
}

impl Acl {
    /// Where a publish of the unit on `topic` goes; `None` if it may not publish there.
    pub fn sink(&self, topic: &str) -> Option<Sink> {
        if let Some(sink) = self.publish.get(topic) {
            return Some(*sink);
        }
        match self.standard(topic, "output_base_topic")? {
            name if name.starts_with("state") => Some(Sink::State),
            _ => Some(Sink::Log),
        }
    }

    /// Whether the unit may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.contains(topic) || self.standard(topic, "input_base_topic").is_some()
    }

    /// The name of the unit's standard topic `topic` in `section`, if it is one.
    fn standard<'t>(&self, topic: &'t str, section: &str) -> Option<&'t str> {
        let mut uuid = Uuid::encode_buffer();
        let unit = self.unit.hyphenated().encode_lower(&mut uuid);
        let name = topic
            .strip_prefix(&*self.domain)?
            .strip_prefix('/')?
            .strip_prefix(section)?
            .strip_prefix('/')?
            .strip_prefix(&*unit)?
            .strip_prefix('/')?;
        let names: &[&str] = if section == "input_base_topic" {
            &INPUT_BASE_TOPICS
        } else {
            &OUTPUT_BASE_TOPICS
        };
        names.contains(&name).then_some(name)
    }
}

/// Reads `unit`'s permissions as they stand now.
pub async fn load(services: &Services, unit: Uuid) -> Result<Acl> {
    let domain = services.units().endpoint.domain.as_str();
    let nodes = of_unit(services.db(), unit).await?;
    let mut acl = Acl {
        unit,
        domain: domain.into(),
        ..Acl::default()
    };
    let mut inputs = Vec::new();
    for node in &nodes {
        let topic = node_topic(domain, node.uuid, &node.topic_name);
        match NodeKind::of(node) {
            NodeKind::Output => {
                acl.publish.insert(topic, Sink::Value(node.uuid));
            }
            NodeKind::Input => {
                acl.subscribe.insert(topic);
                inputs.push(node.uuid);
            }
        }
    }
    for outputs in linked_outputs(services.db(), inputs).await?.into_values() {
        for (output, name) in outputs {
            acl.subscribe.insert(node_topic(domain, output, &name));
        }
    }
    acl.publish.shrink_to_fit();
    acl.subscribe.shrink_to_fit();
    Ok(acl)
}

/// The topic of every mirrored remote output with a value (of a remote unit still followed), for
/// restoring retained messages at start: a unit linked to it gets the newest value when it connects
/// again, whenever the home instance last sent one.
pub async fn retained_mirrors(services: &Services) -> Result<Vec<(String, String)>> {
    use crate::entities::{
        federation_remote_outputs as mirrors, federation_remote_units as remote,
    };
    use crate::services::federation::RemoteStatus;
    let domain = services.units().endpoint.domain.as_str();
    let followed: Vec<Uuid> = remote::Entity::find()
        .filter(remote::Column::Status.eq(RemoteStatus::Accepted.as_str()))
        .all(services.db())
        .await?
        .into_iter()
        .map(|r| r.uuid)
        .collect();
    let mut out = Vec::new();
    // In chunks: a query takes a bounded number of parameters.
    for chunk in followed.chunks(1000) {
        let rows = mirrors::Entity::find()
            .filter(mirrors::Column::RemoteUnitUuid.is_in(chunk.iter().copied()))
            .filter(mirrors::Column::LastValue.is_not_null())
            .all(services.db())
            .await?;
        out.extend(rows.into_iter().filter_map(|m| {
            let value = m.last_value?;
            Some((node_topic(domain, m.uuid, &m.topic_name), value))
        }));
    }
    Ok(out)
}

/// The topic of every input node with a value, for restoring retained messages at start.
pub async fn retained_inputs(services: &Services) -> Result<Vec<(String, String)>> {
    let domain = services.units().endpoint.domain.as_str();
    Ok(unit_nodes::Entity::find()
        .filter(unit_nodes::Column::Kind.eq(NodeKind::Input.as_str()))
        .filter(unit_nodes::Column::LastValue.is_not_null())
        .all(services.db())
        .await?
        .into_iter()
        .filter_map(|n| {
            let value = n.last_value?;
            Some((node_topic(domain, n.uuid, &n.topic_name), value))
        })
        .collect())
}
