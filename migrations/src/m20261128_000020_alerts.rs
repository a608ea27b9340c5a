//! Alerts: rules a user sets on what they may see, the channels alerts reach them by (a linked Telegram chat,
//! signed webhooks), the alerts fired (their history) and the outbox of deliveries, written in the same
//! transaction as the rule's change of state so a restart neither loses nor repeats one; and boards
//! (inputs as buttons, outputs with their values) the bot shows.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn created_at() -> ColumnDef {
    ColumnDef::new(Common::CreatedAt)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut channels = Table::create();
        channels
            .table(AlertChannels::Table)
            .col(
                ColumnDef::new(AlertChannels::Uuid)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new(AlertChannels::UserUuid).uuid().not_null())
            .col(
                ColumnDef::new(AlertChannels::Kind)
                    .string_len(16)
                    .not_null(),
            )
            .col(
                ColumnDef::new(AlertChannels::TelegramChatId)
                    .big_integer()
                    .null(),
            )
            .col(ColumnDef::new(AlertChannels::WebhookUrl).text().null())
            .col(
                ColumnDef::new(AlertChannels::WebhookSecretEncrypted)
                    .text()
                    .null(),
            )
            .col(
                ColumnDef::new(AlertChannels::Paused)
                    .boolean()
                    .not_null()
                    .default(false),
            )
            .col(ColumnDef::new(AlertChannels::PausedReason).text().null())
            .col(
                ColumnDef::new(AlertChannels::Failures)
                    .integer()
                    .not_null()
                    .default(0),
            )
            .col(
                ColumnDef::new(AlertChannels::UpdatedAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(AlertChannels::Table, AlertChannels::UserUuid)
                    .to(Users::Table, Users::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            );
        channels.col(created_at());
        manager.create_table(channels.to_owned()).await?;
        // One chat belongs to one user.
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_channels_chat")
                    .table(AlertChannels::Table)
                    .col(AlertChannels::TelegramChatId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_channels_user")
                    .table(AlertChannels::Table)
                    .col(AlertChannels::UserUuid)
                    .to_owned(),
            )
            .await?;

        let mut codes = Table::create();
        codes
            .table(TelegramLinkCodes::Table)
            .col(
                ColumnDef::new(TelegramLinkCodes::CodeHash)
                    .string_len(64)
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(TelegramLinkCodes::UserUuid)
                    .uuid()
                    .not_null(),
            )
            .col(
                ColumnDef::new(TelegramLinkCodes::ExpiresAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(TelegramLinkCodes::Table, TelegramLinkCodes::UserUuid)
                    .to(Users::Table, Users::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            );
        codes.col(created_at());
        manager.create_table(codes.to_owned()).await?;

        let mut rules = Table::create();
        rules
            .table(AlertRules::Table)
            .col(
                ColumnDef::new(AlertRules::Uuid)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new(AlertRules::UserUuid).uuid().not_null())
            .col(ColumnDef::new(AlertRules::Kind).string_len(16).not_null())
            .col(ColumnDef::new(AlertRules::UnitUuid).uuid().null())
            .col(ColumnDef::new(AlertRules::NodeUuid).uuid().null())
            .col(ColumnDef::new(AlertRules::RepoUnitUuid).uuid().null())
            .col(ColumnDef::new(AlertRules::Threshold).double().null())
            .col(
                ColumnDef::new(AlertRules::Hysteresis)
                    .double()
                    .not_null()
                    .default(0.0),
            )
            .col(
                ColumnDef::new(AlertRules::MinDurationSeconds)
                    .integer()
                    .not_null()
                    .default(0),
            )
            .col(
                ColumnDef::new(AlertRules::CooldownSeconds)
                    .integer()
                    .not_null()
                    .default(0),
            )
            .col(ColumnDef::new(AlertRules::TimeoutSeconds).integer().null())
            .col(
                ColumnDef::new(AlertRules::MutedUntil)
                    .timestamp_with_time_zone()
                    .null(),
            )
            .col(
                ColumnDef::new(AlertRules::State)
                    .string_len(16)
                    .not_null()
                    .default("normal"),
            )
            .col(
                ColumnDef::new(AlertRules::LastFiredAt)
                    .timestamp_with_time_zone()
                    .null(),
            )
            .col(ColumnDef::new(AlertRules::LastDetail).text().null())
            .col(
                ColumnDef::new(AlertRules::UpdatedAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(AlertRules::Table, AlertRules::UserUuid)
                    .to(Users::Table, Users::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(AlertRules::Table, AlertRules::UnitUuid)
                    .to(Units::Table, Units::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(AlertRules::Table, AlertRules::NodeUuid)
                    .to(UnitNodes::Table, UnitNodes::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(AlertRules::Table, AlertRules::RepoUnitUuid)
                    .to(RepoUnits::Table, RepoUnits::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            );
        rules.col(created_at());
        manager.create_table(rules.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_rules_user")
                    .table(AlertRules::Table)
                    .col(AlertRules::UserUuid)
                    .to_owned(),
            )
            .await?;

        let mut alerts = Table::create();
        alerts
            .table(Alerts::Table)
            .col(ColumnDef::new(Alerts::Uuid).uuid().not_null().primary_key())
            .col(ColumnDef::new(Alerts::UserUuid).uuid().not_null())
            .col(ColumnDef::new(Alerts::RuleUuid).uuid().null())
            .col(ColumnDef::new(Alerts::Kind).string_len(16).not_null())
            .col(ColumnDef::new(Alerts::RuleKind).string_len(16).not_null())
            .col(ColumnDef::new(Alerts::UnitUuid).uuid().null())
            .col(ColumnDef::new(Alerts::UnitName).string_len(255).null())
            .col(ColumnDef::new(Alerts::Variable).string_len(255).null())
            .col(ColumnDef::new(Alerts::Value).text().null())
            .col(ColumnDef::new(Alerts::Message).text().not_null())
            .col(
                ColumnDef::new(Alerts::Muted)
                    .boolean()
                    .not_null()
                    .default(false),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(Alerts::Table, Alerts::UserUuid)
                    .to(Users::Table, Users::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(Alerts::Table, Alerts::RuleUuid)
                    .to(AlertRules::Table, AlertRules::Uuid)
                    .on_delete(ForeignKeyAction::SetNull),
            );
        alerts.col(created_at());
        manager.create_table(alerts.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alerts_user_created")
                    .table(Alerts::Table)
                    .col(Alerts::UserUuid)
                    .col(Common::CreatedAt)
                    .to_owned(),
            )
            .await?;

        let mut deliveries = Table::create();
        deliveries
            .table(AlertDeliveries::Table)
            .col(
                ColumnDef::new(AlertDeliveries::Id)
                    .big_integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .col(ColumnDef::new(AlertDeliveries::AlertUuid).uuid().not_null())
            .col(
                ColumnDef::new(AlertDeliveries::ChannelUuid)
                    .uuid()
                    .not_null(),
            )
            .col(
                ColumnDef::new(AlertDeliveries::Status)
                    .string_len(16)
                    .not_null(),
            )
            .col(
                ColumnDef::new(AlertDeliveries::Attempts)
                    .integer()
                    .not_null()
                    .default(0),
            )
            .col(
                ColumnDef::new(AlertDeliveries::NextAttemptAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .col(ColumnDef::new(AlertDeliveries::LastError).text().null())
            .col(
                ColumnDef::new(AlertDeliveries::SentAt)
                    .timestamp_with_time_zone()
                    .null(),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(AlertDeliveries::Table, AlertDeliveries::AlertUuid)
                    .to(Alerts::Table, Alerts::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(AlertDeliveries::Table, AlertDeliveries::ChannelUuid)
                    .to(AlertChannels::Table, AlertChannels::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            );
        deliveries.col(created_at());
        manager.create_table(deliveries.to_owned()).await?;
        // An alert reaches a channel once: the outbox's deduplication.
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_deliveries_alert_channel")
                    .table(AlertDeliveries::Table)
                    .col(AlertDeliveries::AlertUuid)
                    .col(AlertDeliveries::ChannelUuid)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_alert_deliveries_due")
                    .table(AlertDeliveries::Table)
                    .col(AlertDeliveries::Status)
                    .col(AlertDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        let mut boards = Table::create();
        boards
            .table(Boards::Table)
            .col(ColumnDef::new(Boards::Uuid).uuid().not_null().primary_key())
            .col(ColumnDef::new(Boards::UserUuid).uuid().not_null())
            .col(ColumnDef::new(Boards::Name).string_len(64).not_null())
            .col(
                ColumnDef::new(Boards::UpdatedAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .foreign_key(
                ForeignKey::create()
                    .from(Boards::Table, Boards::UserUuid)
                    .to(Users::Table, Users::Uuid)
                    .on_delete(ForeignKeyAction::Cascade),
            );
        boards.col(created_at());
        manager.create_table(boards.to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_boards_user")
                    .table(Boards::Table)
                    .col(Boards::UserUuid)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BoardItems::Table)
                    .col(
                        ColumnDef::new(BoardItems::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(BoardItems::BoardUuid).uuid().not_null())
                    .col(ColumnDef::new(BoardItems::Position).integer().not_null())
                    .col(ColumnDef::new(BoardItems::NodeUuid).uuid().not_null())
                    .col(ColumnDef::new(BoardItems::Label).string_len(64).null())
                    // A preset value for an input's button; none: the bot asks for the value.
                    .col(ColumnDef::new(BoardItems::Value).text().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(BoardItems::Table, BoardItems::BoardUuid)
                            .to(Boards::Table, Boards::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(BoardItems::Table, BoardItems::NodeUuid)
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_board_items_board")
                    .table(BoardItems::Table)
                    .col(BoardItems::BoardUuid)
                    .col(BoardItems::Position)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BoardItems::Table.into_iden(),
            Boards::Table.into_iden(),
            AlertDeliveries::Table.into_iden(),
            Alerts::Table.into_iden(),
            AlertRules::Table.into_iden(),
            TelegramLinkCodes::Table.into_iden(),
            AlertChannels::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Common {
    CreatedAt,
}

#[derive(DeriveIden)]
enum AlertChannels {
    Table,
    Uuid,
    UserUuid,
    Kind,
    TelegramChatId,
    WebhookUrl,
    WebhookSecretEncrypted,
    Paused,
    PausedReason,
    Failures,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TelegramLinkCodes {
    Table,
    CodeHash,
    UserUuid,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum AlertRules {
    Table,
    Uuid,
    UserUuid,
    Kind,
    UnitUuid,
    NodeUuid,
    RepoUnitUuid,
    Threshold,
    Hysteresis,
    MinDurationSeconds,
    CooldownSeconds,
    TimeoutSeconds,
    MutedUntil,
    State,
    LastFiredAt,
    LastDetail,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Alerts {
    Table,
    Uuid,
    UserUuid,
    RuleUuid,
    Kind,
    RuleKind,
    UnitUuid,
    UnitName,
    Variable,
    Value,
    Message,
    Muted,
}

#[derive(DeriveIden)]
enum AlertDeliveries {
    Table,
    Id,
    AlertUuid,
    ChannelUuid,
    Status,
    Attempts,
    NextAttemptAt,
    LastError,
    SentAt,
}

#[derive(DeriveIden)]
enum Boards {
    Table,
    Uuid,
    UserUuid,
    Name,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum BoardItems {
    Table,
    Id,
    BoardUuid,
    Position,
    NodeUuid,
    Label,
    Value,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum UnitNodes {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum RepoUnits {
    Table,
    Uuid,
}
