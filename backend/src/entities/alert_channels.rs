//! Where a user's alerts go: a linked Telegram chat or a signed webhook.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "alert_channels")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub user_uuid: Uuid,
    pub kind: String,
    pub telegram_chat_id: Option<i64>,
    pub webhook_url: Option<String>,
    pub webhook_secret_encrypted: Option<String>,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub failures: i32,
    pub updated_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
