//! An alert rule a user set, and its persisted state (`normal` or `firing`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "alert_rules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub user_uuid: Uuid,
    pub kind: String,
    pub unit_uuid: Option<Uuid>,
    pub node_uuid: Option<Uuid>,
    pub repo_unit_uuid: Option<Uuid>,
    pub threshold: Option<f64>,
    pub hysteresis: f64,
    pub min_duration_seconds: i32,
    pub cooldown_seconds: i32,
    pub timeout_seconds: Option<i32>,
    pub muted_until: Option<DateTimeUtc>,
    pub state: String,
    pub last_fired_at: Option<DateTimeUtc>,
    pub last_detail: Option<String>,
    pub updated_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
