//! The graph: repo_units, units, their variable nodes, links between them, grants, and what units report.
//!
//! Ownership is expressed with foreign keys so that deleting a user or a unit removes everything it owns in
//! one statement, inside one transaction, on both SQLite and PostgreSQL. A unit holds its repo_unit with
//! `RESTRICT`: a repository cannot vanish under the devices built from it.

use sea_orm_migration::prelude::*;

use crate::m20261123_000001_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn timestamps(table: &mut TableCreateStatement) -> &mut TableCreateStatement {
    table
        .col(
            ColumnDef::new(Alias::new("created_at"))
                .timestamp_with_time_zone()
                .not_null(),
        )
        .col(
            ColumnDef::new(Alias::new("updated_at"))
                .timestamp_with_time_zone()
                .not_null(),
        )
}

fn owned_by_user(
    from_table: impl IntoIden,
    column: impl IntoIden,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, column)
        .to(Users::Table, Users::Uuid)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                timestamps(
                    Table::create()
                        .table(RepoUnits::Table)
                        .col(
                            ColumnDef::new(RepoUnits::Uuid)
                                .uuid()
                                .not_null()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(RepoUnits::CreatorUuid).uuid().not_null())
                        .col(ColumnDef::new(RepoUnits::Name).string_len(100).not_null())
                        .col(
                            ColumnDef::new(RepoUnits::Visibility)
                                .string_len(16)
                                .not_null(),
                        )
                        .col(ColumnDef::new(RepoUnits::CloneUrl).text().not_null())
                        .col(
                            ColumnDef::new(RepoUnits::IsPrivateRepository)
                                .boolean()
                                .not_null(),
                        )
                        // AES-256-GCM ciphertext under the instance master key, never plaintext.
                        .col(
                            ColumnDef::new(RepoUnits::CredentialsEncrypted)
                                .text()
                                .null(),
                        )
                        .col(
                            ColumnDef::new(RepoUnits::WebhookSecretEncrypted)
                                .text()
                                .null(),
                        )
                        .col(
                            ColumnDef::new(RepoUnits::DefaultBranch)
                                .string_len(255)
                                .null(),
                        )
                        .col(
                            ColumnDef::new(RepoUnits::SyncPeriodSeconds)
                                .integer()
                                .not_null()
                                .default(86_400),
                        )
                        .col(
                            ColumnDef::new(RepoUnits::AutoSync)
                                .boolean()
                                .not_null()
                                .default(true),
                        )
                        .col(
                            ColumnDef::new(RepoUnits::LastSyncedAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .col(ColumnDef::new(RepoUnits::LastSyncError).text().null())
                        .foreign_key(&mut owned_by_user(
                            RepoUnits::Table,
                            RepoUnits::CreatorUuid,
                            ForeignKeyAction::Cascade,
                        )),
                )
                .to_owned(),
            )
            .await?;
        index(
            manager,
            RepoUnits::Table,
            "idx_repo_units_creator",
            [RepoUnits::CreatorUuid],
            false,
        )
        .await?;

        manager
            .create_table(
                timestamps(
                    Table::create()
                        .table(Units::Table)
                        .col(ColumnDef::new(Units::Uuid).uuid().not_null().primary_key())
                        .col(ColumnDef::new(Units::CreatorUuid).uuid().not_null())
                        .col(ColumnDef::new(Units::RepoUnitUuid).uuid().not_null())
                        // Unique on the instance, as the seed asks: it names topics and bundles for people.
                        .col(
                            ColumnDef::new(Units::Name)
                                .string_len(100)
                                .not_null()
                                .unique_key(),
                        )
                        .col(ColumnDef::new(Units::Visibility).string_len(16).not_null())
                        .col(
                            ColumnDef::new(Units::FollowsDefaultBranch)
                                .boolean()
                                .not_null()
                                .default(true),
                        )
                        .col(ColumnDef::new(Units::RepoBranch).string_len(255).null())
                        .col(ColumnDef::new(Units::RepoCommit).string_len(64).null())
                        .col(ColumnDef::new(Units::TargetCommit).string_len(64).null())
                        .col(ColumnDef::new(Units::ReportedCommit).string_len(64).null())
                        .col(ColumnDef::new(Units::UpdateStatus).string_len(16).null())
                        .col(
                            ColumnDef::new(Units::UpdateStatusAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .col(ColumnDef::new(Units::EnvEncrypted).text().null())
                        // Bumped to revoke the unit's JWT when its env.json is regenerated.
                        .col(
                            ColumnDef::new(Units::TokenVersion)
                                .integer()
                                .not_null()
                                .default(0),
                        )
                        .col(ColumnDef::new(Units::LastState).text().null())
                        .col(
                            ColumnDef::new(Units::LastStateAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .col(ColumnDef::new(Units::StateStorage).text().null())
                        .foreign_key(&mut owned_by_user(
                            Units::Table,
                            Units::CreatorUuid,
                            ForeignKeyAction::Cascade,
                        ))
                        .foreign_key(
                            ForeignKey::create()
                                .from(Units::Table, Units::RepoUnitUuid)
                                .to(RepoUnits::Table, RepoUnits::Uuid)
                                .on_delete(ForeignKeyAction::Restrict)
                                .on_update(ForeignKeyAction::Cascade),
                        ),
                )
                .to_owned(),
            )
            .await?;
        index(
            manager,
            Units::Table,
            "idx_units_creator",
            [Units::CreatorUuid],
            false,
        )
        .await?;
        index(
            manager,
            Units::Table,
            "idx_units_repo_unit",
            [Units::RepoUnitUuid],
            false,
        )
        .await?;

        manager
            .create_table(
                timestamps(
                    Table::create()
                        .table(UnitNodes::Table)
                        .col(
                            ColumnDef::new(UnitNodes::Uuid)
                                .uuid()
                                .not_null()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(UnitNodes::UnitUuid).uuid().not_null())
                        .col(ColumnDef::new(UnitNodes::Kind).string_len(8).not_null())
                        .col(
                            ColumnDef::new(UnitNodes::TopicName)
                                .string_len(255)
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(UnitNodes::Visibility)
                                .string_len(16)
                                .not_null(),
                        )
                        // An input others may write to through links or the API, per the seed.
                        .col(
                            ColumnDef::new(UnitNodes::IsRewritableInput)
                                .boolean()
                                .not_null()
                                .default(false),
                        )
                        .col(
                            ColumnDef::new(UnitNodes::HistoryPolicy)
                                .string_len(16)
                                .not_null()
                                .default("last_value"),
                        )
                        .col(ColumnDef::new(UnitNodes::HistoryLimit).integer().null())
                        .col(
                            ColumnDef::new(UnitNodes::HistoryWindowSeconds)
                                .integer()
                                .null(),
                        )
                        .col(ColumnDef::new(UnitNodes::LastValue).text().null())
                        .col(
                            ColumnDef::new(UnitNodes::LastValueAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .foreign_key(
                            ForeignKey::create()
                                .from(UnitNodes::Table, UnitNodes::UnitUuid)
                                .to(Units::Table, Units::Uuid)
                                .on_delete(ForeignKeyAction::Cascade)
                                .on_update(ForeignKeyAction::Cascade),
                        ),
                )
                .to_owned(),
            )
            .await?;
        index(
            manager,
            UnitNodes::Table,
            "idx_unit_nodes_topic",
            [UnitNodes::UnitUuid, UnitNodes::Kind, UnitNodes::TopicName],
            true,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(UnitNodeEdges::Table)
                    .col(
                        ColumnDef::new(UnitNodeEdges::Uuid)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeEdges::OutputNodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeEdges::InputNodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(UnitNodeEdges::CreatorUuid).uuid().not_null())
                    .col(
                        ColumnDef::new(UnitNodeEdges::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UnitNodeEdges::Table, UnitNodeEdges::OutputNodeUuid)
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UnitNodeEdges::Table, UnitNodeEdges::InputNodeUuid)
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(&mut owned_by_user(
                        UnitNodeEdges::Table,
                        UnitNodeEdges::CreatorUuid,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            UnitNodeEdges::Table,
            "idx_unit_node_edges_pair",
            [UnitNodeEdges::OutputNodeUuid, UnitNodeEdges::InputNodeUuid],
            true,
        )
        .await?;
        index(
            manager,
            UnitNodeEdges::Table,
            "idx_unit_node_edges_input",
            [UnitNodeEdges::InputNodeUuid],
            false,
        )
        .await?;

        // A grant of a private node to a user. One nullable column per node kind, each a cascading foreign
        // key, so a grant can never outlive what it grants.
        manager
            .create_table(
                Table::create()
                    .table(Permissions::Table)
                    .col(
                        ColumnDef::new(Permissions::Uuid)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Permissions::GranteeUserUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Permissions::RepoUnitUuid).uuid().null())
                    .col(ColumnDef::new(Permissions::UnitUuid).uuid().null())
                    .col(ColumnDef::new(Permissions::UnitNodeUuid).uuid().null())
                    .col(
                        ColumnDef::new(Permissions::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(&mut owned_by_user(
                        Permissions::Table,
                        Permissions::GranteeUserUuid,
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Permissions::Table, Permissions::RepoUnitUuid)
                            .to(RepoUnits::Table, RepoUnits::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Permissions::Table, Permissions::UnitUuid)
                            .to(Units::Table, Units::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Permissions::Table, Permissions::UnitNodeUuid)
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .check(Expr::cust(
                        "(CASE WHEN repo_unit_uuid IS NULL THEN 0 ELSE 1 END \
                             + CASE WHEN unit_uuid IS NULL THEN 0 ELSE 1 END \
                             + CASE WHEN unit_node_uuid IS NULL THEN 0 ELSE 1 END) = 1",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            Permissions::Table,
            "idx_permissions_grantee",
            [Permissions::GranteeUserUuid],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(UnitLogs::Table)
                    .col(
                        ColumnDef::new(UnitLogs::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(UnitLogs::UnitUuid).uuid().not_null())
                    .col(ColumnDef::new(UnitLogs::Level).string_len(16).not_null())
                    .col(ColumnDef::new(UnitLogs::Text).text().not_null())
                    .col(
                        ColumnDef::new(UnitLogs::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(UnitLogs::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UnitLogs::Table, UnitLogs::UnitUuid)
                            .to(Units::Table, Units::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            UnitLogs::Table,
            "idx_unit_logs_unit_time",
            [UnitLogs::UnitUuid, UnitLogs::CreatedAt],
            false,
        )
        .await?;
        index(
            manager,
            UnitLogs::Table,
            "idx_unit_logs_expiry",
            [UnitLogs::ExpiresAt],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(UnitNodeValues::Table)
                    .col(
                        ColumnDef::new(UnitNodeValues::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(UnitNodeValues::UnitNodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(UnitNodeValues::Value).text().not_null())
                    .col(
                        ColumnDef::new(UnitNodeValues::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UnitNodeValues::Table, UnitNodeValues::UnitNodeUuid)
                            .to(UnitNodes::Table, UnitNodes::Uuid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            UnitNodeValues::Table,
            "idx_unit_node_values_node_time",
            [UnitNodeValues::UnitNodeUuid, UnitNodeValues::CreatedAt],
            false,
        )
        .await?;

        manager
            .create_table(
                timestamps(
                    Table::create()
                        .table(FederationPeers::Table)
                        .col(
                            ColumnDef::new(FederationPeers::Uuid)
                                .uuid()
                                .not_null()
                                .primary_key(),
                        )
                        .col(
                            ColumnDef::new(FederationPeers::Domain)
                                .string_len(255)
                                .not_null()
                                .unique_key(),
                        )
                        .col(ColumnDef::new(FederationPeers::ActorUrl).text().not_null())
                        .col(
                            ColumnDef::new(FederationPeers::Status)
                                .string_len(16)
                                .not_null(),
                        )
                        .col(ColumnDef::new(FederationPeers::PublicKeyPem).text().null()),
                )
                .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            FederationPeers::Table.into_iden(),
            UnitNodeValues::Table.into_iden(),
            UnitLogs::Table.into_iden(),
            Permissions::Table.into_iden(),
            UnitNodeEdges::Table.into_iden(),
            UnitNodes::Table.into_iden(),
            Units::Table.into_iden(),
            RepoUnits::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

async fn index<T, C>(
    manager: &SchemaManager<'_>,
    table: T,
    name: &str,
    columns: impl IntoIterator<Item = C>,
    unique: bool,
) -> Result<(), DbErr>
where
    T: IntoIden,
    C: IntoIden,
{
    let mut statement = Index::create();
    statement.name(name).table(table);
    for column in columns {
        statement.col(column);
    }
    if unique {
        statement.unique();
    }
    manager.create_index(statement.to_owned()).await
}

#[derive(DeriveIden)]
enum RepoUnits {
    Table,
    Uuid,
    CreatorUuid,
    Name,
    Visibility,
    CloneUrl,
    IsPrivateRepository,
    CredentialsEncrypted,
    WebhookSecretEncrypted,
    DefaultBranch,
    SyncPeriodSeconds,
    AutoSync,
    LastSyncedAt,
    LastSyncError,
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Uuid,
    CreatorUuid,
    RepoUnitUuid,
    Name,
    Visibility,
    FollowsDefaultBranch,
    RepoBranch,
    RepoCommit,
    TargetCommit,
    ReportedCommit,
    UpdateStatus,
    UpdateStatusAt,
    EnvEncrypted,
    TokenVersion,
    LastState,
    LastStateAt,
    StateStorage,
}

#[derive(DeriveIden)]
enum UnitNodes {
    Table,
    Uuid,
    UnitUuid,
    Kind,
    TopicName,
    Visibility,
    IsRewritableInput,
    HistoryPolicy,
    HistoryLimit,
    HistoryWindowSeconds,
    LastValue,
    LastValueAt,
}

#[derive(DeriveIden)]
enum UnitNodeEdges {
    Table,
    Uuid,
    OutputNodeUuid,
    InputNodeUuid,
    CreatorUuid,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Permissions {
    Table,
    Uuid,
    GranteeUserUuid,
    RepoUnitUuid,
    UnitUuid,
    UnitNodeUuid,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UnitLogs {
    Table,
    Id,
    UnitUuid,
    Level,
    Text,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum UnitNodeValues {
    Table,
    Id,
    UnitNodeUuid,
    Value,
    CreatedAt,
}

#[derive(DeriveIden)]
enum FederationPeers {
    Table,
    Uuid,
    Domain,
    ActorUrl,
    Status,
    PublicKeyPem,
}
