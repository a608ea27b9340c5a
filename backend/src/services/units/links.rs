//! Links: an output node feeding an input node. A link adds the output's topic to the input unit's
//! schema.json, so that unit subscribes to it.
//!
//! Who may link: anyone who can see the output's unit (others' public outputs included), into an input of
//! a unit they may change, or into an input its creator marked rewritable and they can see.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use crate::entities::{unit_node_edges, unit_nodes, units};
use crate::error::{Error, Result};
use crate::services::units::events::UnitEvent;
use crate::services::units::nodes::NodeKind;
use crate::services::{Actor, Services, access};

/// A node and its unit, if `actor` may see the unit.
pub async fn visible_node(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
) -> Result<(unit_nodes::Model, units::Model)> {
    let node = unit_nodes::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("unit_node"))?;
    let unit =
        access::find_visible::<units::Entity>(services.db(), actor, node.unit_uuid, "unit_node")
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound("unit_node"),
                other => other,
            })?;
    Ok((node, unit))
}

/// Whether `actor` may write into `input` (link to it or set its value).
pub fn may_write_input(
    actor: &Actor,
    input: &unit_nodes::Model,
    unit: &units::Model,
) -> Result<()> {
    if NodeKind::of(input) != NodeKind::Input {
        return Err(Error::Validation(crate::domain::InvalidValue {
            field: "inputUuid",
            message: "is not an input".into(),
        }));
    }
    if input.is_rewritable_input {
        actor.require_user()?;
        return Ok(());
    }
    access::ensure_can_edit(actor, unit.creator_uuid)
}

/// Links `output` to `input`; a second identical link is a `CONFLICT`.
pub async fn create(
    services: &Services,
    actor: &Actor,
    output: Uuid,
    input: Uuid,
) -> Result<unit_node_edges::Model> {
    let user = actor.require_user()?;
    let (output_node, _) = visible_node(services, actor, output).await?;
    if NodeKind::of(&output_node) != NodeKind::Output {
        return Err(Error::Validation(crate::domain::InvalidValue {
            field: "outputUuid",
            message: "is not an output".into(),
        }));
    }
    let (input_node, input_unit) = visible_node(services, actor, input).await?;
    may_write_input(actor, &input_node, &input_unit)?;
    let exists = unit_node_edges::Entity::find()
        .filter(unit_node_edges::Column::OutputNodeUuid.eq(output))
        .filter(unit_node_edges::Column::InputNodeUuid.eq(input))
        .one(services.db())
        .await?;
    if exists.is_some() {
        return Err(Error::Conflict("these nodes are already linked".into()));
    }
    let edge = unit_node_edges::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        output_node_uuid: Set(output),
        input_node_uuid: Set(input),
        creator_uuid: Set(user.id.as_uuid()),
        created_at: Set(Utc::now()),
    }
    .insert(services.db())
    .await
    // Two requests racing past the check above meet the unique index.
    .map_err(|e| Error::on_unique(e, "these nodes are already linked"))?;
    services
        .unit_events()
        .send(UnitEvent::SchemaChanged(input_unit.uuid));
    Ok(edge)
}

/// Removes a link: its creator, the input unit's creator, or an admin.
pub async fn delete(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let user = actor.require_user()?;
    let edge = unit_node_edges::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("link"))?;
    let (_, input_unit) = visible_node(services, actor, edge.input_node_uuid)
        .await
        .map_err(|_| Error::NotFound("link"))?;
    if edge.creator_uuid != user.id.as_uuid() {
        access::ensure_can_edit(actor, input_unit.creator_uuid)?;
    }
    unit_node_edges::Entity::delete_by_id(uuid)
        .exec(services.db())
        .await?;
    services
        .unit_events()
        .send(UnitEvent::SchemaChanged(input_unit.uuid));
    Ok(())
}

/// Units with an input linked to an output of `unit`.
pub async fn units_listening_to(db: &impl ConnectionTrait, unit: Uuid) -> Result<Vec<Uuid>> {
    use sea_orm::QuerySelect;
    let outputs: Vec<Uuid> = unit_nodes::Entity::find()
        .select_only()
        .column(unit_nodes::Column::Uuid)
        .filter(unit_nodes::Column::UnitUuid.eq(unit))
        .into_tuple()
        .all(db)
        .await?;
    let inputs: Vec<Uuid> = unit_node_edges::Entity::find()
        .select_only()
        .column(unit_node_edges::Column::InputNodeUuid)
        .filter(unit_node_edges::Column::OutputNodeUuid.is_in(outputs))
        .into_tuple()
        .all(db)
        .await?;
    let mut units: Vec<Uuid> = unit_nodes::Entity::find()
        .select_only()
        .column(unit_nodes::Column::UnitUuid)
        .filter(unit_nodes::Column::Uuid.is_in(inputs))
        .into_tuple()
        .all(db)
        .await?;
    units.sort();
    units.dedup();
    Ok(units)
}

/// The links into or out of any of `nodes`, oldest first.
pub async fn of_nodes(
    db: &impl ConnectionTrait,
    nodes: impl IntoIterator<Item = Uuid> + Clone,
) -> Result<Vec<unit_node_edges::Model>> {
    use sea_orm::Condition;
    Ok(unit_node_edges::Entity::find()
        .filter(
            Condition::any()
                .add(unit_node_edges::Column::OutputNodeUuid.is_in(nodes.clone()))
                .add(unit_node_edges::Column::InputNodeUuid.is_in(nodes)),
        )
        .order_by_asc(unit_node_edges::Column::CreatedAt)
        .all(db)
        .await?)
}

/// The inputs fed by `output` whose units `viewer` may see.
pub async fn inputs_of_output(
    services: &Services,
    viewer: &Actor,
    output: Uuid,
) -> Result<Vec<unit_nodes::Model>> {
    let inputs: Vec<Uuid> = unit_node_edges::Entity::find()
        .filter(unit_node_edges::Column::OutputNodeUuid.eq(output))
        .all(services.db())
        .await?
        .into_iter()
        .map(|e| e.input_node_uuid)
        .collect();
    let nodes = unit_nodes::Entity::find()
        .filter(unit_nodes::Column::Uuid.is_in(inputs))
        .order_by_desc(unit_nodes::Column::CreatedAt)
        .all(services.db())
        .await?;
    let visible_units: std::collections::HashSet<Uuid> =
        access::visible_to(units::Entity::find(), viewer)
            .filter(units::Column::Uuid.is_in(nodes.iter().map(|n| n.unit_uuid)))
            .all(services.db())
            .await?
            .into_iter()
            .map(|u| u.uuid)
            .collect();
    Ok(nodes
        .into_iter()
        .filter(|n| visible_units.contains(&n.unit_uuid))
        .collect())
}
