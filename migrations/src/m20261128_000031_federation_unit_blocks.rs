//! Per-unit blocks: the owner of a unit (or an admin) keeps one remote instance away from that unit
//! alone, while the peering holds for every other unit.
//!
//! A block names the instance by its canonical domain, not by a peer row: it outlives an ended or
//! renewed peering. It goes with its unit (`CASCADE`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(FederationUnitBlocks::Table)
                    .col(
                        ColumnDef::new(FederationUnitBlocks::Uuid)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(FederationUnitBlocks::UnitUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationUnitBlocks::Domain)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationUnitBlocks::CreatorUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationUnitBlocks::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(FederationUnitBlocks::Table, FederationUnitBlocks::UnitUuid)
                            .to(Units::Table, Units::Uuid)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_federation_unit_blocks_unit_domain")
                    .table(FederationUnitBlocks::Table)
                    .col(FederationUnitBlocks::UnitUuid)
                    .col(FederationUnitBlocks::Domain)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(FederationUnitBlocks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum FederationUnitBlocks {
    Table,
    Uuid,
    UnitUuid,
    Domain,
    CreatorUuid,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Uuid,
}
