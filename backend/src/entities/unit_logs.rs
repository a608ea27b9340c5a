//! One log line a unit published, kept until it expires.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "unit_logs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub unit_uuid: Uuid,
    pub level: String,
    pub text: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
