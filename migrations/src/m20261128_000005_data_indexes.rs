//! Indexes that serve the data path's queries: a node's history newest first and a unit's log lines
//! newest first (`ORDER BY id DESC`, also what the trims count from). Without them each read and trim
//! sorted the node's whole history, so its time grew with the history kept.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_unit_node_values_node_id")
                    .table(UnitNodeValues::Table)
                    .col(UnitNodeValues::UnitNodeUuid)
                    .col(UnitNodeValues::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_unit_logs_unit_id")
                    .table(UnitLogs::Table)
                    .col(UnitLogs::UnitUuid)
                    .col(UnitLogs::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_unit_logs_unit_id")
                    .table(UnitLogs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_unit_node_values_node_id")
                    .table(UnitNodeValues::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UnitNodeValues {
    Table,
    Id,
    UnitNodeUuid,
}

#[derive(DeriveIden)]
enum UnitLogs {
    Table,
    Id,
    UnitUuid,
}
