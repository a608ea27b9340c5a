//! A unit node: one input or output variable of a unit, mapped to an MQTT topic.

use pepeunit_protocol::Visibility;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "unit_nodes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub unit_uuid: Uuid,
    pub kind: String,
    pub topic_name: String,
    pub visibility: Visibility,
    pub is_rewritable_input: bool,
    pub history_policy: String,
    pub history_limit: Option<i32>,
    pub history_window_seconds: Option<i32>,
    pub last_value: Option<String>,
    pub last_value_at: Option<DateTimeUtc>,
    /// Filters, aggregate windows and their retention, as JSON ([`crate::services::units::processing::Processing`]); none: store everything, aggregate nothing.
    pub processing: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
