//! Federation: the instance key, peers, who follows this instance's units, and the remote units this
//! instance follows with their outputs (mirrors) and the links from them into local inputs.
//!
//! `federation_peers` was created empty by the graph migration and never written; it is recreated here
//! with what peering needs (the peer's inbox, the Follow that asked for it, who asked). Rows owned by a
//! peer go with it (`CASCADE`), so ending a peering removes every follow and mirror in one statement.
//! `federation_followers.unit_uuid` has no foreign key on purpose: when a unit is deleted its followers
//! must still be found, to tell them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn created_updated(table: &mut TableCreateStatement) -> &mut TableCreateStatement {
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

fn cascade(
    from: impl IntoIden,
    column: impl IntoIden,
    to: impl IntoIden,
    to_column: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from, column)
        .to(to, to_column)
        .on_delete(ForeignKeyAction::Cascade)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(FederationPeers::Table).to_owned())
            .await?;
        manager
            .create_table(
                created_updated(
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
                        .col(ColumnDef::new(FederationPeers::InboxUrl).text().not_null())
                        .col(
                            ColumnDef::new(FederationPeers::Status)
                                .string_len(16)
                                .not_null(),
                        )
                        .col(ColumnDef::new(FederationPeers::PublicKeyPem).text().null())
                        .col(ColumnDef::new(FederationPeers::FollowId).text().null())
                        .col(
                            ColumnDef::new(FederationPeers::RequestedHere)
                                .boolean()
                                .not_null(),
                        ),
                )
                .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FederationKeys::Table)
                    .col(
                        ColumnDef::new(FederationKeys::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(FederationKeys::PublicKeyPem)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationKeys::PrivateKeySealed)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FederationFollowers::Table)
                    .col(
                        ColumnDef::new(FederationFollowers::Uuid)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(FederationFollowers::PeerUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationFollowers::UnitUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationFollowers::FollowId)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationFollowers::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(&mut cascade(
                        FederationFollowers::Table,
                        FederationFollowers::PeerUuid,
                        FederationPeers::Table,
                        FederationPeers::Uuid,
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            FederationFollowers::Table,
            "idx_federation_followers_peer_unit",
            [FederationFollowers::PeerUuid, FederationFollowers::UnitUuid],
            true,
        )
        .await?;
        index(
            manager,
            FederationFollowers::Table,
            "idx_federation_followers_unit",
            [FederationFollowers::UnitUuid],
            false,
        )
        .await?;
        manager
            .create_table(
                created_updated(
                    Table::create()
                        .table(FederationRemoteUnits::Table)
                        .col(
                            ColumnDef::new(FederationRemoteUnits::Uuid)
                                .uuid()
                                .not_null()
                                .primary_key(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteUnits::PeerUuid)
                                .uuid()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteUnits::RemoteUnitUuid)
                                .uuid()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteUnits::ObjectUrl)
                                .text()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteUnits::Name)
                                .string_len(255)
                                .null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteUnits::Status)
                                .string_len(16)
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteUnits::FollowId)
                                .text()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteUnits::CreatorUuid)
                                .uuid()
                                .not_null(),
                        )
                        .foreign_key(&mut cascade(
                            FederationRemoteUnits::Table,
                            FederationRemoteUnits::PeerUuid,
                            FederationPeers::Table,
                            FederationPeers::Uuid,
                        ))
                        .foreign_key(&mut cascade(
                            FederationRemoteUnits::Table,
                            FederationRemoteUnits::CreatorUuid,
                            Users::Table,
                            Users::Uuid,
                        )),
                )
                .to_owned(),
            )
            .await?;
        index(
            manager,
            FederationRemoteUnits::Table,
            "idx_federation_remote_units_peer_unit",
            [
                FederationRemoteUnits::PeerUuid,
                FederationRemoteUnits::RemoteUnitUuid,
            ],
            true,
        )
        .await?;
        manager
            .create_table(
                created_updated(
                    Table::create()
                        .table(FederationRemoteOutputs::Table)
                        .col(
                            ColumnDef::new(FederationRemoteOutputs::Uuid)
                                .uuid()
                                .not_null()
                                .primary_key(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteOutputs::RemoteUnitUuid)
                                .uuid()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteOutputs::RemoteNodeUuid)
                                .uuid()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteOutputs::TopicName)
                                .string_len(255)
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteOutputs::LastValue)
                                .text()
                                .null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteOutputs::LastValueAt)
                                .timestamp_with_time_zone()
                                .null(),
                        )
                        .col(
                            ColumnDef::new(FederationRemoteOutputs::LastSequence)
                                .big_integer()
                                .not_null(),
                        )
                        .foreign_key(&mut cascade(
                            FederationRemoteOutputs::Table,
                            FederationRemoteOutputs::RemoteUnitUuid,
                            FederationRemoteUnits::Table,
                            FederationRemoteUnits::Uuid,
                        )),
                )
                .to_owned(),
            )
            .await?;
        index(
            manager,
            FederationRemoteOutputs::Table,
            "idx_federation_remote_outputs_unit_node",
            [
                FederationRemoteOutputs::RemoteUnitUuid,
                FederationRemoteOutputs::RemoteNodeUuid,
            ],
            true,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(FederationRemoteLinks::Table)
                    .col(
                        ColumnDef::new(FederationRemoteLinks::Uuid)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(FederationRemoteLinks::RemoteUnitUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationRemoteLinks::OutputName)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationRemoteLinks::InputNodeUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationRemoteLinks::CreatorUuid)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(FederationRemoteLinks::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(&mut cascade(
                        FederationRemoteLinks::Table,
                        FederationRemoteLinks::RemoteUnitUuid,
                        FederationRemoteUnits::Table,
                        FederationRemoteUnits::Uuid,
                    ))
                    .foreign_key(&mut cascade(
                        FederationRemoteLinks::Table,
                        FederationRemoteLinks::InputNodeUuid,
                        UnitNodes::Table,
                        UnitNodes::Uuid,
                    ))
                    .foreign_key(&mut cascade(
                        FederationRemoteLinks::Table,
                        FederationRemoteLinks::CreatorUuid,
                        Users::Table,
                        Users::Uuid,
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            FederationRemoteLinks::Table,
            "idx_federation_remote_links_unique",
            [
                FederationRemoteLinks::RemoteUnitUuid,
                FederationRemoteLinks::OutputName,
                FederationRemoteLinks::InputNodeUuid,
            ],
            true,
        )
        .await?;
        index(
            manager,
            FederationRemoteLinks::Table,
            "idx_federation_remote_links_input",
            [FederationRemoteLinks::InputNodeUuid],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            FederationRemoteLinks::Table.into_iden(),
            FederationRemoteOutputs::Table.into_iden(),
            FederationRemoteUnits::Table.into_iden(),
            FederationFollowers::Table.into_iden(),
            FederationKeys::Table.into_iden(),
            FederationPeers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        // The table as the graph migration made it.
        manager
            .create_table(
                created_updated(
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
enum FederationPeers {
    Table,
    Uuid,
    Domain,
    ActorUrl,
    InboxUrl,
    Status,
    PublicKeyPem,
    FollowId,
    RequestedHere,
}

#[derive(DeriveIden)]
enum FederationKeys {
    Table,
    Id,
    PublicKeyPem,
    PrivateKeySealed,
    CreatedAt,
}

#[derive(DeriveIden)]
enum FederationFollowers {
    Table,
    Uuid,
    PeerUuid,
    UnitUuid,
    FollowId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum FederationRemoteUnits {
    Table,
    Uuid,
    PeerUuid,
    RemoteUnitUuid,
    ObjectUrl,
    Name,
    Status,
    FollowId,
    CreatorUuid,
}

#[derive(DeriveIden)]
enum FederationRemoteOutputs {
    Table,
    Uuid,
    RemoteUnitUuid,
    RemoteNodeUuid,
    TopicName,
    LastValue,
    LastValueAt,
    LastSequence,
}

#[derive(DeriveIden)]
enum FederationRemoteLinks {
    Table,
    Uuid,
    RemoteUnitUuid,
    OutputName,
    InputNodeUuid,
    CreatorUuid,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UnitNodes {
    Table,
    Uuid,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Uuid,
}
