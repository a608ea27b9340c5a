//! A unit: one physical device built from a repo_unit.

use pepeunit_protocol::Visibility;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "units")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub creator_uuid: Uuid,
    pub repo_unit_uuid: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    pub visibility: Visibility,
    pub follows_default_branch: bool,
    pub repo_branch: Option<String>,
    pub repo_commit: Option<String>,
    pub repo_tag: Option<String>,
    pub target_commit: Option<String>,
    pub reported_commit: Option<String>,
    pub update_status: Option<String>,
    pub update_status_at: Option<DateTimeUtc>,
    pub env_encrypted: Option<String>,
    pub token_version: i32,
    pub last_state: Option<String>,
    pub last_state_at: Option<DateTimeUtc>,
    pub state_storage: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
