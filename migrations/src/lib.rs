//! The Pepeunit database schema: the one source of truth for SQLite and PostgreSQL.
//!
//! Migrations only ever move forward in production; every one still has a working `down` so that the
//! test suite can prove a release can be rolled back.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_users;
mod m20261123_000002_graph;
mod m20261123_000003_unit_pins;
mod m20261123_000004_rollouts;
mod m20261128_000005_data_indexes;
mod m20261128_000010_federation;
mod m20261128_000020_alerts;
mod m20261128_000030_alert_webhook_variables;
mod m20261128_000031_federation_unit_blocks;
mod m20261128_000040_mail;
mod m20261128_000050_api_tokens;
mod m20261128_000060_processing;
mod m20261128_000061_values_time_brin;

/// Runs the Pepeunit migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_users::Migration),
            Box::new(m20261123_000002_graph::Migration),
            Box::new(m20261123_000003_unit_pins::Migration),
            Box::new(m20261123_000004_rollouts::Migration),
            Box::new(m20261128_000005_data_indexes::Migration),
            Box::new(m20261128_000010_federation::Migration),
            Box::new(m20261128_000020_alerts::Migration),
            Box::new(m20261128_000030_alert_webhook_variables::Migration),
            Box::new(m20261128_000031_federation_unit_blocks::Migration),
            Box::new(m20261128_000040_mail::Migration),
            Box::new(m20261128_000050_api_tokens::Migration),
            Box::new(m20261128_000060_processing::Migration),
            Box::new(m20261128_000061_values_time_brin::Migration),
        ]
    }
}
