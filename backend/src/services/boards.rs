//! Boards: a user's chosen inputs (buttons with a preset value, or a prompt for one) and outputs (shown with
//! their live values), which the bot renders. Pressing a button sets the input through
//! [`data::set_input_value`] as the user who pressed, so their write access decides, not the board's owner.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use uuid::Uuid;

use crate::domain::InvalidValue;
use crate::entities::{board_items, boards, unit_nodes, units};
use crate::error::{Error, Result};
use crate::services::units::data;
use crate::services::units::links::{may_write_input, visible_node};
use crate::services::units::nodes::NodeKind;
use crate::services::{Actor, Services};

/// Most boards one user may have.
pub const MAX_BOARDS: u64 = 20;
/// Most items on one board (a Telegram keyboard stays usable).
pub const MAX_ITEMS: usize = 24;
/// Longest board name and item label.
const MAX_LABEL: usize = 64;

/// An item as the user composes it.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub node: Uuid,
    pub label: Option<String>,
    /// For an input: the value its button sets; none: the bot asks for one.
    pub value: Option<String>,
}

/// A board item with what it shows.
#[derive(Debug, Clone)]
pub struct ShownItem {
    pub item: board_items::Model,
    pub node: unit_nodes::Model,
    pub unit: units::Model,
}

impl ShownItem {
    /// The label the user gave, or `unit/variable`.
    pub fn label(&self) -> String {
        self.item.label.clone().unwrap_or_else(|| {
            let variable = self
                .node
                .topic_name
                .strip_suffix("/pepeunit")
                .unwrap_or(&self.node.topic_name);
            format!("{}/{variable}", self.unit.name)
        })
    }

    pub fn is_input(&self) -> bool {
        NodeKind::of(&self.node) == NodeKind::Input
    }
}

fn invalid(field: &'static str, message: &str) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.to_owned(),
    })
}

/// Creates a board of nodes `actor` may see.
pub async fn create(
    services: &Services,
    actor: &Actor,
    name: &str,
    items: Vec<NewItem>,
) -> Result<boards::Model> {
    let user = actor.require_user()?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_LABEL {
        return Err(invalid("name", "must be 1 to 64 characters"));
    }
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(invalid("items", "a board has 1 to 24 items"));
    }
    for item in &items {
        let (node, _) = visible_node(services, actor, item.node).await?;
        if item
            .label
            .as_ref()
            .is_some_and(|l| l.chars().count() > MAX_LABEL)
        {
            return Err(invalid("label", "must be at most 64 characters"));
        }
        if NodeKind::of(&node) == NodeKind::Output && item.value.is_some() {
            return Err(invalid("value", "only an input's button has a value"));
        }
        if item
            .value
            .as_ref()
            .is_some_and(|v| v.len() > data::VALUE_LIMIT)
        {
            return Err(invalid("value", "is too long"));
        }
    }
    let count = boards::Entity::find()
        .filter(boards::Column::UserUuid.eq(user.id.as_uuid()))
        .count(services.db())
        .await?;
    if count >= MAX_BOARDS {
        return Err(invalid("name", "a user may have at most 20 boards"));
    }
    let now = Utc::now();
    let txn = services.db().begin().await?;
    let board = boards::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        user_uuid: Set(user.id.as_uuid()),
        name: Set(name.to_owned()),
        updated_at: Set(now),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    for (position, item) in items.into_iter().enumerate() {
        board_items::ActiveModel {
            board_uuid: Set(board.uuid),
            position: Set(i32::try_from(position).unwrap_or(i32::MAX)),
            node_uuid: Set(item.node),
            label: Set(item
                .label
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())),
            value: Set(item.value),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
    }
    txn.commit().await?;
    Ok(board)
}

/// The caller's boards.
pub async fn list(services: &Services, actor: &Actor) -> Result<Vec<boards::Model>> {
    let user = actor.require_user()?;
    Ok(boards::Entity::find()
        .filter(boards::Column::UserUuid.eq(user.id.as_uuid()))
        .order_by_asc(boards::Column::Name)
        .all(services.db())
        .await?)
}

/// Deletes one of the caller's boards.
pub async fn delete(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let user = actor.require_user()?;
    let deleted = boards::Entity::delete_many()
        .filter(boards::Column::Uuid.eq(uuid))
        .filter(boards::Column::UserUuid.eq(user.id.as_uuid()))
        .exec(services.db())
        .await?
        .rows_affected;
    if deleted == 0 {
        return Err(Error::NotFound("board"));
    }
    Ok(())
}

/// A board and its items as `actor` may see them now (an item whose unit they can no longer see is left
/// out); the board must be theirs.
pub async fn show(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
) -> Result<(boards::Model, Vec<ShownItem>)> {
    let user = actor.require_user()?;
    let board = boards::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .filter(|b| b.user_uuid == user.id.as_uuid())
        .ok_or(Error::NotFound("board"))?;
    let items = board_items::Entity::find()
        .filter(board_items::Column::BoardUuid.eq(board.uuid))
        .order_by_asc(board_items::Column::Position)
        .all(services.db())
        .await?;
    let mut shown = Vec::with_capacity(items.len());
    for item in items {
        match visible_node(services, actor, item.node_uuid).await {
            Ok((node, unit)) => shown.push(ShownItem { item, node, unit }),
            Err(Error::NotFound(_) | Error::Forbidden(_)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok((board, shown))
}

/// The item `item` of board `board`.
async fn item_of(services: &Services, board: Uuid, item: i64) -> Result<board_items::Model> {
    board_items::Entity::find_by_id(item)
        .one(services.db())
        .await?
        .filter(|row| row.board_uuid == board)
        .ok_or(Error::NotFound("board item"))
}

/// Presses an input's button: sets its preset value as `actor`, who must be allowed to write the input.
/// Returns the item pressed; an item without a preset value is refused (the bot prompts for the value and
/// calls [`set_value`]).
pub async fn press(
    services: &Services,
    actor: &Actor,
    board: Uuid,
    item: i64,
) -> Result<board_items::Model> {
    let row = item_of(services, board, item).await?;
    let value = row
        .value
        .clone()
        .ok_or_else(|| invalid("value", "this button asks for a value"))?;
    data::set_input_value(services, actor, row.node_uuid, &value).await?;
    Ok(row)
}

/// A press of a button without a preset value: the item's input with its label, if `actor` may write it
/// (so the bot asks for a value only of someone whose value it would take).
pub async fn prompt(
    services: &Services,
    actor: &Actor,
    board: Uuid,
    item: i64,
) -> Result<ShownItem> {
    let row = item_of(services, board, item).await?;
    let (node, unit) = visible_node(services, actor, row.node_uuid).await?;
    may_write_input(actor, &node, &unit)?;
    Ok(ShownItem {
        item: row,
        node,
        unit,
    })
}

/// Sets the input of an item without a preset value to `value` (the answer to the bot's prompt), through
/// [`data::set_input_value`] as `actor`.
pub async fn set_value(
    services: &Services,
    actor: &Actor,
    board: Uuid,
    item: i64,
    value: &str,
) -> Result<board_items::Model> {
    let row = item_of(services, board, item).await?;
    if row.value.is_some() {
        return Err(invalid("value", "this button sets its preset value"));
    }
    data::set_input_value(services, actor, row.node_uuid, value).await?;
    Ok(row)
}
