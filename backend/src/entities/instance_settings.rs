//! The single row of switches an admin sets for the whole instance.

use sea_orm::entity::prelude::*;

/// The id of the one row.
pub const SINGLETON_ID: i32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instance_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub registration_open: bool,
    pub manual_verification: bool,
    pub federation_enabled: bool,
    /// New accounts verify their e-mail address by a mailed link (needs `smtp_url`).
    pub email_verification: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
