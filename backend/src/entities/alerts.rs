//! An alert that fired or resolved: the history a user reads, and what the outbox delivers.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub user_uuid: Uuid,
    pub rule_uuid: Option<Uuid>,
    pub kind: String,
    pub rule_kind: String,
    pub unit_uuid: Option<Uuid>,
    pub unit_name: Option<String>,
    pub variable: Option<String>,
    pub value: Option<String>,
    pub message: String,
    pub muted: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
