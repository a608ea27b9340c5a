//! How many samples of an output one processing filter turned away (or aggregation skipped).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "unit_node_rejections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub unit_node_uuid: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub reason: String,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
