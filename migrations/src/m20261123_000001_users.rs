//! Users and the instance-wide settings an admin switches.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(ColumnDef::new(Users::Uuid).uuid().not_null().primary_key())
                    .col(
                        ColumnDef::new(Users::Login)
                            .string_len(32)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Users::Email)
                            .string_len(254)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Users::PasswordHash)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Users::Role).string_len(16).not_null())
                    .col(ColumnDef::new(Users::Status).string_len(16).not_null())
                    // Bumped on password change, block and log-out: every token carrying an older value is dead.
                    .col(
                        ColumnDef::new(Users::TokenVersion)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(Users::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Users::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Users::LastLoginAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(InstanceSettings::Table)
                    .col(
                        ColumnDef::new(InstanceSettings::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(InstanceSettings::RegistrationOpen)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(InstanceSettings::ManualVerification)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(InstanceSettings::FederationEnabled)
                            .boolean()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(InstanceSettings::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;

        // One row, always present: registration open, no manual verification, federation off until an
        // admin picks peers.
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(InstanceSettings::Table)
                    .columns([
                        InstanceSettings::Id,
                        InstanceSettings::RegistrationOpen,
                        InstanceSettings::ManualVerification,
                        InstanceSettings::FederationEnabled,
                        InstanceSettings::UpdatedAt,
                    ])
                    .values_panic([
                        1.into(),
                        true.into(),
                        false.into(),
                        false.into(),
                        Expr::current_timestamp(),
                    ])
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(InstanceSettings::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub(crate) enum Users {
    Table,
    Uuid,
    Login,
    Email,
    PasswordHash,
    Role,
    Status,
    TokenVersion,
    CreatedAt,
    UpdatedAt,
    LastLoginAt,
}

#[derive(DeriveIden)]
enum InstanceSettings {
    Table,
    Id,
    RegistrationOpen,
    ManualVerification,
    FederationEnabled,
    UpdatedAt,
}
