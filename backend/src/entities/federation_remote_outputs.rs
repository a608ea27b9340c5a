//! A mirror node: one output of a followed remote unit. Its uuid names the local MQTT topic its values
//! are published on, which linked inputs subscribe to as to a local output's.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "federation_remote_outputs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub remote_unit_uuid: Uuid,
    pub remote_node_uuid: Uuid,
    pub topic_name: String,
    pub last_value: Option<String>,
    pub last_value_at: Option<DateTimeUtc>,
    /// The sequence of the last sample applied; older and equal ones are duplicates.
    pub last_sequence: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
