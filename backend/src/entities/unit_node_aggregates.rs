//! One tumbling window of an output's numeric values: its count, sum, min, max, average and exact median.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "unit_node_aggregates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub unit_node_uuid: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub window_seconds: i32,
    #[sea_orm(primary_key, auto_increment = false)]
    pub window_start: DateTimeUtc,
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub median: f64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
