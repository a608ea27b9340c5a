//! E-mail and update timeouts: the one-time tokens behind verification and password-reset links (only their
//! SHA-256 is stored; a used or expired one is refused), the admin's switch that has new accounts confirm
//! their address by mail, and an index the update-timeout check scans pending attempts by.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MailTokens::Table)
                    .col(
                        ColumnDef::new(MailTokens::TokenHash)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(MailTokens::UserUuid).uuid().not_null())
                    .col(
                        ColumnDef::new(MailTokens::Purpose)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(MailTokens::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(MailTokens::UsedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(MailTokens::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(MailTokens::Table, MailTokens::UserUuid)
                            .to(Users::Table, Users::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mail_tokens_user")
                    .table(MailTokens::Table)
                    .col(MailTokens::UserUuid)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(InstanceSettings::Table)
                    .add_column(
                        ColumnDef::new(InstanceSettings::EmailVerification)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_update_attempts_status_started")
                    .table(UpdateAttempts::Table)
                    .col(UpdateAttempts::Status)
                    .col(UpdateAttempts::StartedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_update_attempts_status_started")
                    .table(UpdateAttempts::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(InstanceSettings::Table)
                    .drop_column(InstanceSettings::EmailVerification)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(MailTokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum MailTokens {
    Table,
    TokenHash,
    UserUuid,
    Purpose,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum InstanceSettings {
    Table,
    EmailVerification,
}

#[derive(DeriveIden)]
enum UpdateAttempts {
    Table,
    Status,
    StartedAt,
}
