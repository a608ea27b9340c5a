//! Fleet updates: rollouts (all of a repo_unit's units moved to one commit in waves) and the audit log of
//! every update attempt of every unit.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Rollouts::Table)
                    .col(
                        ColumnDef::new(Rollouts::Uuid)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Rollouts::RepoUnitUuid).uuid().not_null())
                    .col(ColumnDef::new(Rollouts::CreatorUuid).uuid().not_null())
                    .col(ColumnDef::new(Rollouts::Branch).string_len(255).not_null())
                    .col(
                        ColumnDef::new(Rollouts::TargetCommit)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Rollouts::BatchSize).integer().not_null())
                    .col(
                        ColumnDef::new(Rollouts::MaxFailureRatio)
                            .double()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Rollouts::WaveTimeoutSeconds)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Rollouts::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Rollouts::Wave)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(Rollouts::Detail).text().null())
                    .col(
                        ColumnDef::new(Rollouts::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Rollouts::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Rollouts::Table, Rollouts::RepoUnitUuid)
                            .to(RepoUnits::Table, RepoUnits::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Rollouts::Table, Rollouts::CreatorUuid)
                            .to(Users::Table, Users::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UpdateAttempts::Table)
                    .col(
                        ColumnDef::new(UpdateAttempts::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(UpdateAttempts::UnitUuid).uuid().not_null())
                    .col(ColumnDef::new(UpdateAttempts::RolloutUuid).uuid().null())
                    .col(ColumnDef::new(UpdateAttempts::Wave).integer().null())
                    .col(
                        ColumnDef::new(UpdateAttempts::FromCommit)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(UpdateAttempts::TargetCommit)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UpdateAttempts::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(UpdateAttempts::Detail).text().null())
                    .col(
                        ColumnDef::new(UpdateAttempts::StartedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UpdateAttempts::FinishedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UpdateAttempts::Table, UpdateAttempts::UnitUuid)
                            .to(Units::Table, Units::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UpdateAttempts::Table, UpdateAttempts::RolloutUuid)
                            .to(Rollouts::Table, Rollouts::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_update_attempts_unit")
                    .table(UpdateAttempts::Table)
                    .col(UpdateAttempts::UnitUuid)
                    .col(UpdateAttempts::StartedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UpdateAttempts::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Rollouts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Rollouts {
    Table,
    Uuid,
    RepoUnitUuid,
    CreatorUuid,
    Branch,
    TargetCommit,
    BatchSize,
    MaxFailureRatio,
    WaveTimeoutSeconds,
    Status,
    Wave,
    Detail,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum UpdateAttempts {
    Table,
    Id,
    UnitUuid,
    RolloutUuid,
    Wave,
    FromCommit,
    TargetCommit,
    Status,
    Detail,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum RepoUnits {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Uuid,
}
