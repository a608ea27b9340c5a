//! A link from an output of a remote unit (by name, known once the follow is accepted) into a local
//! input.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "federation_remote_links")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub remote_unit_uuid: Uuid,
    pub output_name: String,
    pub input_node_uuid: Uuid,
    pub creator_uuid: Uuid,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
