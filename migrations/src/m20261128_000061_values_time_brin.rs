//! On PostgreSQL, a BRIN index on `unit_node_values.created_at`: queries by time across every variable
//! (Grafana's PostgreSQL data source on the `grafana.samples` view of `docs/src/data.md`, a time filter
//! without a variable) read only the blocks of the range instead of the whole table. Samples arrive
//! roughly in time order, which is what BRIN needs; the index is a few pages per gigabyte and costs
//! ingestion next to nothing. One variable's range stays with the `(unit_node_uuid, created_at)` B-tree.
//! SQLite has no BRIN: nothing is done there.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_unit_node_values_time_brin ON unit_node_values USING brin (created_at)",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX idx_unit_node_values_time_brin")
            .await
            .map(|_| ())
    }
}
