//! Two writers in each other's way: PostgreSQL aborts one side of a deadlock (40P01), and the server
//! classes that as "try again" — the rollout driver and the ingestion writer then redo their transaction
//! instead of halting a rollout or failing a batch of publishes (seen in CI: a rollout wave and an
//! ingestion batch with state reports locked two `units` rows in opposite orders).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::TestDb;
use pepeunit_backend::db::{is_busy, retry_busy};
use pepeunit_backend::error::Error;
use sea_orm::{ConnectionTrait, Database, DbErr, TransactionTrait};

/// Runs a deadlock between two transactions and returns the error of the one PostgreSQL aborted.
async fn deadlock(url: &str) -> DbErr {
    let db = Database::connect(url).await.unwrap();
    db.execute_unprepared(
        "CREATE TABLE rows (id INT PRIMARY KEY, v INT); INSERT INTO rows VALUES (1, 0), (2, 0)",
    )
    .await
    .unwrap();
    let first = db.begin().await.unwrap();
    let second = db.begin().await.unwrap();
    first
        .execute_unprepared("UPDATE rows SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    second
        .execute_unprepared("UPDATE rows SET v = 2 WHERE id = 2")
        .await
        .unwrap();
    // Each now waits for the row the other holds; PostgreSQL aborts one after deadlock_timeout (1 s).
    let (a, b) = tokio::join!(
        first.execute_unprepared("UPDATE rows SET v = 1 WHERE id = 2"),
        second.execute_unprepared("UPDATE rows SET v = 2 WHERE id = 1"),
    );
    match (a, b) {
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => error,
        other => panic!("expected exactly one side aborted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_postgresql_deadlock_is_tried_again_not_reported() {
    let db = TestDb::new().await;
    let Some(url) = db.url.clone().filter(|_| db.is_postgres()) else {
        eprintln!("PostgreSQL only (PEPEUNIT_TEST_DATABASE_URL); SQLite has one writer at a time");
        return;
    };
    let error = deadlock(&url).await;
    assert!(is_busy(&error), "not classed as transient: {error:?}");

    // The retry loop gives the work another go and returns its result.
    let first_try = Arc::new(Mutex::new(Some(error)));
    let calls = Arc::new(AtomicUsize::new(0));
    let result = retry_busy("the test work", || {
        let first_try = first_try.clone();
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match first_try.lock().unwrap().take() {
                Some(error) => Err(Error::Database(error)),
                None => Ok("done"),
            }
        }
    })
    .await;
    assert_eq!(result.unwrap(), "done");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Errors that would fail again are not retried.
    let unique = Database::connect(&url)
        .await
        .unwrap()
        .execute_unprepared("INSERT INTO rows VALUES (1, 0)")
        .await
        .unwrap_err();
    assert!(!is_busy(&unique), "{unique:?}");
}
