//! A unit's variable nodes: created from the schema's `input_topic` and `output_topic`, kept in step with it.

use std::collections::HashSet;

use chrono::Utc;
use pepeunit_protocol::Visibility;
use pepeunit_protocol::schema::SchemaExample;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use crate::entities::{unit_nodes, units};
use crate::error::Result;

/// Whether a node takes values in or sends them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Input,
    Output,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Input => "input",
            NodeKind::Output => "output",
        }
    }

    pub fn of(node: &unit_nodes::Model) -> Self {
        if node.kind == "input" {
            NodeKind::Input
        } else {
            NodeKind::Output
        }
    }
}

/// How much of a node's value history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPolicy {
    /// Only the last value, on the node itself.
    LastValue,
    /// The last `n` values.
    LastN(u32),
    /// Values of the last `seconds`.
    Window(u32),
}

impl HistoryPolicy {
    pub fn of(node: &unit_nodes::Model) -> Self {
        let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
        match (
            node.history_policy.as_str(),
            positive(node.history_limit),
            positive(node.history_window_seconds),
        ) {
            ("last_n", Some(n), _) => HistoryPolicy::LastN(n),
            ("window", _, Some(seconds)) => HistoryPolicy::Window(seconds),
            _ => HistoryPolicy::LastValue,
        }
    }

    /// The stored form: policy name, limit, window.
    pub fn columns(self) -> (&'static str, Option<i32>, Option<i32>) {
        let int = |v: u32| i32::try_from(v).ok();
        match self {
            HistoryPolicy::LastValue => ("last_value", None, None),
            HistoryPolicy::LastN(n) => ("last_n", int(n), None),
            HistoryPolicy::Window(seconds) => ("window", None, int(seconds)),
        }
    }
}

/// Makes the unit's nodes match `schema`: same (kind, topic) stays, new ones come, missing ones go with
/// their links and history (by cascade).
pub async fn sync_with_schema(
    db: &impl ConnectionTrait,
    unit: &units::Model,
    schema: &SchemaExample,
) -> Result<()> {
    let wanted: HashSet<(NodeKind, &str)> = schema
        .input_topic
        .iter()
        .map(|t| (NodeKind::Input, t.as_str()))
        .chain(
            schema
                .output_topic
                .iter()
                .map(|t| (NodeKind::Output, t.as_str())),
        )
        .collect();
    let existing = unit_nodes::Entity::find()
        .filter(unit_nodes::Column::UnitUuid.eq(unit.uuid))
        .all(db)
        .await?;
    let mut kept = HashSet::new();
    let mut gone = Vec::new();
    for node in &existing {
        let key = (NodeKind::of(node), node.topic_name.as_str());
        if wanted.contains(&key) {
            kept.insert(key);
        } else {
            gone.push(node.uuid);
        }
    }
    if !gone.is_empty() {
        unit_nodes::Entity::delete_many()
            .filter(unit_nodes::Column::Uuid.is_in(gone))
            .exec(db)
            .await?;
    }
    let now = Utc::now();
    // Schema order, so nodes are created in the order the developer wrote them.
    let ordered = schema
        .input_topic
        .iter()
        .map(|t| (NodeKind::Input, t.as_str()))
        .chain(
            schema
                .output_topic
                .iter()
                .map(|t| (NodeKind::Output, t.as_str())),
        );
    for (kind, topic) in ordered {
        if kept.contains(&(kind, topic)) {
            continue;
        }
        let (policy, limit, window) = HistoryPolicy::LastValue.columns();
        unit_nodes::ActiveModel {
            uuid: Set(Uuid::new_v4()),
            unit_uuid: Set(unit.uuid),
            kind: Set(kind.as_str().to_owned()),
            topic_name: Set(topic.to_owned()),
            visibility: Set(unit.visibility),
            is_rewritable_input: Set(false),
            history_policy: Set(policy.to_owned()),
            history_limit: Set(limit),
            history_window_seconds: Set(window),
            last_value: Set(None),
            last_value_at: Set(None),
            processing: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(db)
        .await?;
        kept.insert((kind, topic));
    }
    Ok(())
}

/// Nodes share their unit's visibility.
pub async fn set_visibility(
    db: &impl ConnectionTrait,
    unit: Uuid,
    visibility: Visibility,
) -> Result<()> {
    unit_nodes::Entity::update_many()
        .col_expr(unit_nodes::Column::Visibility, Expr::value(visibility))
        .filter(unit_nodes::Column::UnitUuid.eq(unit))
        .exec(db)
        .await?;
    Ok(())
}

/// A unit's nodes, inputs first, each by topic.
/// The nodes of all `units`, each unit's in the order of [`of_unit`].
pub async fn of_units(
    db: &impl ConnectionTrait,
    units: impl IntoIterator<Item = Uuid>,
) -> Result<Vec<unit_nodes::Model>> {
    use sea_orm::QueryOrder;
    Ok(unit_nodes::Entity::find()
        .filter(unit_nodes::Column::UnitUuid.is_in(units))
        .order_by_asc(unit_nodes::Column::UnitUuid)
        .order_by_asc(unit_nodes::Column::Kind)
        .order_by_asc(unit_nodes::Column::TopicName)
        .all(db)
        .await?)
}

pub async fn of_unit(db: &impl ConnectionTrait, unit: Uuid) -> Result<Vec<unit_nodes::Model>> {
    use sea_orm::QueryOrder;
    Ok(unit_nodes::Entity::find()
        .filter(unit_nodes::Column::UnitUuid.eq(unit))
        .order_by_asc(unit_nodes::Column::Kind)
        .order_by_asc(unit_nodes::Column::TopicName)
        .all(db)
        .await?)
}
