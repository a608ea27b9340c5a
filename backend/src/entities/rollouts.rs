//! A rollout: a repo_unit's units moved to one commit in waves.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rollouts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub repo_unit_uuid: Uuid,
    pub creator_uuid: Uuid,
    pub branch: String,
    pub target_commit: String,
    pub batch_size: i32,
    pub max_failure_ratio: f64,
    pub wave_timeout_seconds: i32,
    pub status: String,
    pub wave: i32,
    pub detail: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
