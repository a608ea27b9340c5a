//! A unit's schema.json: every topic it publishes and listens to, as full topic strings.
//!
//! Standard topics are `<domain>/<input_base_topic|output_base_topic>/<unit uuid>/<name>`; a variable's
//! topic is `<domain>/<node uuid>`, with `/pepeunit` appended when its name ends so (the reference
//! server's rule, which firmware relies on). An input lists its own topic and then the topic of every
//! output linked to it, so the unit subscribes to those directly.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::entities::{unit_node_edges, unit_nodes, units};
use crate::error::Result;
use crate::services::Services;
use crate::services::units::nodes::{self, NodeKind};

/// The MQTT topic of a variable node.
pub fn node_topic(domain: &str, node: Uuid, topic_name: &str) -> String {
    if topic_name.ends_with("/pepeunit") {
        format!("{domain}/{node}/pepeunit")
    } else {
        format!("{domain}/{node}")
    }
}

/// The MQTT topic of a standard command or report of a unit.
pub fn base_topic(domain: &str, section: &str, unit: Uuid, name: &str) -> String {
    format!("{domain}/{section}/{unit}/{name}")
}

/// The outputs linked to each of `inputs`, oldest link first: input uuid → [(output uuid, topic name)].
/// Outputs of remote units (federation) come after the local ones, as their mirrors' uuids: their
/// values are published on the mirror's topic.
pub async fn linked_outputs(
    db: &impl ConnectionTrait,
    inputs: Vec<Uuid>,
) -> Result<HashMap<Uuid, Vec<(Uuid, String)>>> {
    let mirrors = crate::services::federation::linked_mirrors(db, &inputs).await?;
    let edges = unit_node_edges::Entity::find()
        .filter(unit_node_edges::Column::InputNodeUuid.is_in(inputs))
        .order_by_asc(unit_node_edges::Column::CreatedAt)
        .all(db)
        .await?;
    let outputs: HashMap<Uuid, String> = unit_nodes::Entity::find()
        .filter(unit_nodes::Column::Uuid.is_in(edges.iter().map(|e| e.output_node_uuid)))
        .all(db)
        .await?
        .into_iter()
        .map(|n| (n.uuid, n.topic_name))
        .collect();
    let mut out: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
    for edge in edges {
        if let Some(name) = outputs.get(&edge.output_node_uuid) {
            out.entry(edge.input_node_uuid)
                .or_default()
                .push((edge.output_node_uuid, name.clone()));
        }
    }
    for (input, mirror, name) in mirrors {
        out.entry(input).or_default().push((mirror, name));
    }
    Ok(out)
}

/// The schema.json of `unit` as it stands now.
pub async fn render(services: &Services, unit: &units::Model) -> Result<Map<String, Value>> {
    let domain = services.units().endpoint.domain.as_str();
    let (_, example) = super::target_examples(services, unit).await?;
    let nodes = nodes::of_unit(services.db(), unit.uuid).await?;
    let inputs: Vec<Uuid> = nodes
        .iter()
        .filter(|n| NodeKind::of(n) == NodeKind::Input)
        .map(|n| n.uuid)
        .collect();
    let mut links = linked_outputs(services.db(), inputs).await?;

    let base = |section: &str, names: &[String]| -> Value {
        let map: Map<String, Value> = names
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    json!([base_topic(domain, section, unit.uuid, name)]),
                )
            })
            .collect();
        Value::Object(map)
    };
    let mut input_topic = Map::new();
    let mut output_topic = Map::new();
    for node in &nodes {
        let mut topics = vec![node_topic(domain, node.uuid, &node.topic_name)];
        match NodeKind::of(node) {
            NodeKind::Input => {
                for (output, name) in links.remove(&node.uuid).unwrap_or_default() {
                    topics.push(node_topic(domain, output, &name));
                }
                input_topic.insert(node.topic_name.clone(), json!(topics));
            }
            NodeKind::Output => {
                output_topic.insert(node.topic_name.clone(), json!(topics));
            }
        }
    }
    let mut schema = Map::new();
    schema.insert(
        "input_base_topic".into(),
        base("input_base_topic", &example.input_base_topic),
    );
    schema.insert(
        "output_base_topic".into(),
        base("output_base_topic", &example.output_base_topic),
    );
    schema.insert("input_topic".into(), Value::Object(input_topic));
    schema.insert("output_topic".into(), Value::Object(output_topic));
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_reference_server() {
        let node = Uuid::nil();
        assert_eq!(
            node_topic("pu.example", node, "temp/pepeunit"),
            format!("pu.example/{node}/pepeunit")
        );
        assert_eq!(
            node_topic("pu.example", node, "temp"),
            format!("pu.example/{node}")
        );
        assert_eq!(
            base_topic("pu.example", "input_base_topic", node, "update/pepeunit"),
            format!("pu.example/input_base_topic/{node}/update/pepeunit")
        );
    }
}
