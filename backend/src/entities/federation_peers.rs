//! Another instance this one knows: asked to peer, peered, refused or blocked.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "federation_peers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: Uuid,
    /// Canonical (`pepeunit_federation::Domain`), so one instance has one row whatever its spelling.
    #[sea_orm(unique)]
    pub domain: String,
    pub actor_url: String,
    pub inbox_url: String,
    pub status: String,
    pub public_key_pem: Option<String>,
    pub follow_id: Option<String>,
    pub requested_here: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
