//! One item of a board: an input (a button with a preset value, or a prompt) or an output (its value).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "board_items")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub board_uuid: Uuid,
    pub position: i32,
    pub node_uuid: Uuid,
    pub label: Option<String>,
    pub value: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
