//! Units pinned to a tag: the tag is kept beside the branch and commit so the UI shows what the user chose,
//! while `target_commit` keeps the commit it resolved to.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Units::Table)
                    .add_column(ColumnDef::new(Units::RepoTag).string_len(255).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Units::Table)
                    .drop_column(Units::RepoTag)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Units {
    Table,
    RepoTag,
}
