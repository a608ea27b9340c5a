//! The variables whose every value a webhook channel receives (besides its alerts).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AlertWebhookVariables::Table)
                    .col(
                        ColumnDef::new(AlertWebhookVariables::Uuid)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AlertWebhookVariables::ChannelUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AlertWebhookVariables::NodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AlertWebhookVariables::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                AlertWebhookVariables::Table,
                                AlertWebhookVariables::ChannelUuid,
                            )
                            .to(AlertChannels::Table, AlertChannels::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                AlertWebhookVariables::Table,
                                AlertWebhookVariables::NodeUuid,
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
                    .name("idx_alert_webhook_variables_channel_node")
                    .table(AlertWebhookVariables::Table)
                    .col(AlertWebhookVariables::ChannelUuid)
                    .col(AlertWebhookVariables::NodeUuid)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AlertWebhookVariables::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AlertWebhookVariables {
    Table,
    Uuid,
    ChannelUuid,
    NodeUuid,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AlertChannels {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum UnitNodes {
    Table,
    Uuid,
}
