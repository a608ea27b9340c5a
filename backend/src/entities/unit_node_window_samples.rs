//! One numeric sample of an output's open aggregate window: what its exact median is computed from.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "unit_node_window_samples")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub unit_node_uuid: Uuid,
    pub at: DateTimeUtc,
    pub value: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
