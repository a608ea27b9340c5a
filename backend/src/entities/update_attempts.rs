//! The audit log of update attempts: one row per unit per target commit it was told to run.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "update_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub unit_uuid: Uuid,
    pub rollout_uuid: Option<Uuid>,
    pub wave: Option<i32>,
    pub from_commit: Option<String>,
    pub target_commit: String,
    pub status: String,
    pub detail: Option<String>,
    pub started_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
