//! Processing of output variables: each node's processing settings (filters, aggregate windows and their
//! retention, as JSON on the node, so ingestion reads them with the node it already loads), the aggregates
//! of its tumbling windows, the numeric samples of its open windows (what an exact median needs, and what
//! lets a restart continue a window), and how many samples each filter turned away.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UnitNodes::Table)
                    .add_column(ColumnDef::new(UnitNodes::Processing).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UnitNodeAggregates::Table)
                    .col(
                        ColumnDef::new(UnitNodeAggregates::UnitNodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeAggregates::WindowSeconds)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeAggregates::WindowStart)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeAggregates::Count)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(UnitNodeAggregates::Sum).double().not_null())
                    .col(ColumnDef::new(UnitNodeAggregates::Min).double().not_null())
                    .col(ColumnDef::new(UnitNodeAggregates::Max).double().not_null())
                    .col(ColumnDef::new(UnitNodeAggregates::Avg).double().not_null())
                    .col(
                        ColumnDef::new(UnitNodeAggregates::Median)
                            .double()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeAggregates::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(UnitNodeAggregates::UnitNodeUuid)
                            .col(UnitNodeAggregates::WindowSeconds)
                            .col(UnitNodeAggregates::WindowStart),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UnitNodeAggregates::Table, UnitNodeAggregates::UnitNodeUuid)
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UnitNodeWindowSamples::Table)
                    .col(
                        ColumnDef::new(UnitNodeWindowSamples::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeWindowSamples::UnitNodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeWindowSamples::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeWindowSamples::Value)
                            .double()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                UnitNodeWindowSamples::Table,
                                UnitNodeWindowSamples::UnitNodeUuid,
                            )
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_unit_node_window_samples_node_at")
                    .table(UnitNodeWindowSamples::Table)
                    .col(UnitNodeWindowSamples::UnitNodeUuid)
                    .col(UnitNodeWindowSamples::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UnitNodeRejections::Table)
                    .col(
                        ColumnDef::new(UnitNodeRejections::UnitNodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeRejections::Reason)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeRejections::Count)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(UnitNodeRejections::UnitNodeUuid)
                            .col(UnitNodeRejections::Reason),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UnitNodeRejections::Table, UnitNodeRejections::UnitNodeUuid)
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            UnitNodeRejections::Table.into_iden(),
            UnitNodeWindowSamples::Table.into_iden(),
            UnitNodeAggregates::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(UnitNodes::Table)
                    .drop_column(UnitNodes::Processing)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UnitNodes {
    Table,
    Uuid,
    Processing,
}

#[derive(DeriveIden)]
enum UnitNodeAggregates {
    Table,
    UnitNodeUuid,
    WindowSeconds,
    WindowStart,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Median,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum UnitNodeWindowSamples {
    Table,
    Id,
    UnitNodeUuid,
    At,
    Value,
}

#[derive(DeriveIden)]
enum UnitNodeRejections {
    Table,
    UnitNodeUuid,
    Reason,
    Count,
}
