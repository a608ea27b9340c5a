//! A unit of a peer that this instance follows (asked, accepted, or gone).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "federation_remote_units")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    pub peer_uuid: Uuid,
    pub remote_unit_uuid: Uuid,
    pub object_url: String,
    pub name: Option<String>,
    pub status: String,
    pub follow_id: String,
    pub creator_uuid: Uuid,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
