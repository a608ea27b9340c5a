//! The schema migrates up, down and up again on the engine under test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDb;
use pepeunit_migrations::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Query};

async fn table_exists(db: &sea_orm::DatabaseConnection, table: &str) -> bool {
    let probe = Query::select()
        .expr(sea_orm::sea_query::Expr::val(1))
        .from(Alias::new(table))
        .limit(1)
        .to_owned();
    db.query_one(&probe).await.is_ok()
}

const TABLES: &[&str] = &[
    "users",
    "instance_settings",
    "repo_units",
    "units",
    "unit_nodes",
    "unit_node_edges",
    "permissions",
    "unit_logs",
    "unit_node_values",
    "federation_peers",
    "federation_keys",
    "federation_followers",
    "federation_remote_units",
    "federation_remote_outputs",
    "federation_remote_links",
    "federation_unit_blocks",
    "alert_channels",
    "telegram_link_codes",
    "alert_rules",
    "alerts",
    "alert_deliveries",
    "alert_webhook_variables",
    "boards",
    "board_items",
    "api_tokens",
    "mail_tokens",
    "unit_node_aggregates",
    "unit_node_window_samples",
    "unit_node_rejections",
];

#[tokio::test]
async fn up_down_up() {
    let test_db = TestDb::new().await;
    let db = pepeunit_backend::db::connect(&test_db.config())
        .await
        .unwrap();
    for round in 0..2 {
        Migrator::up(&db, None).await.unwrap();
        for table in TABLES {
            assert!(
                table_exists(&db, table).await,
                "round {round}: {table} after up"
            );
        }
        assert!(
            Migrator::get_pending_migrations(&db)
                .await
                .unwrap()
                .is_empty()
        );
        if round == 0 {
            Migrator::down(&db, None).await.unwrap();
            for table in TABLES {
                assert!(!table_exists(&db, table).await, "{table} after down");
            }
        }
    }
}
