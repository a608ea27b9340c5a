//! A repo_unit: a mirrored firmware repository.

use pepeunit_protocol::Visibility;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "repo_units")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub creator_uuid: Uuid,
    pub name: String,
    pub visibility: Visibility,
    pub clone_url: String,
    pub is_private_repository: bool,
    pub credentials_encrypted: Option<String>,
    pub webhook_secret_encrypted: Option<String>,
    pub default_branch: Option<String>,
    pub sync_period_seconds: i32,
    pub auto_sync: bool,
    pub last_synced_at: Option<DateTimeUtc>,
    pub last_sync_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
