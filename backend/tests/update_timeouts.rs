//! Update timeouts: a unit told to run a new commit by hand that never reports it turns `failed` with the
//! reason in its update attempts; a unit that reports in time stays `done`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::units::Fixture;
use serde_json::{Value, json};

const STATUS: &str = "query($u: ID!) { unit(uuid: $u) { targetCommit updateStatus updateAttempts { rolloutUuid status targetCommit detail finishedAt } } }";

async fn status(fx: &Fixture, unit: &str) -> Value {
    let (_, body) = fx
        .server
        .gql(STATUS, json!({ "u": unit }), Some(&fx.token))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["unit"].clone()
}

#[tokio::test]
async fn an_update_the_unit_never_reports_fails_after_the_timeout() {
    let fx = Fixture::with_config(|_| {}, |c| c.unit_update_timeout_seconds = 3).await;
    let v1 = common::git::git(&fx.source.work, &["rev-parse", "HEAD"]);
    let mut units = Vec::new();
    for name in ["Silent", "Prompt"] {
        let unit = fx
            .create_unit(
                &fx.token,
                json!({ "name": name, "followsDefaultBranch": false, "branch": "main", "commit": v1 }),
            )
            .await;
        units.push(unit["uuid"].as_str().unwrap().to_owned());
    }
    fx.source.write("main.py", "print('v2')\n");
    let v2 = fx.source.commit("v2");
    fx.push_and_sync().await;
    for unit in &units {
        let (_, body) = fx
            .server
            .gql(
                "mutation($u: ID!, $c: String!) { updateUnit(uuid: $u, input: { followsDefaultBranch: false, branch: \"main\", commit: $c }) { updateStatus } }",
                json!({ "u": unit, "c": v2 }),
                Some(&fx.token),
            )
            .await;
        assert_eq!(
            body["data"]["updateUnit"]["updateStatus"], "pending",
            "{body}"
        );
    }
    // The second unit reports the new commit in its state right away.
    let state = json!({ "pu_commit_version": v2 }).to_string();
    pepeunit_backend::services::units::data::record_state(
        fx.server.services.db(),
        units[1].parse().unwrap(),
        state.as_bytes(),
    )
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let silent = loop {
        let silent = status(&fx, &units[0]).await;
        if silent["updateStatus"] != "pending" {
            break silent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never timed out: {silent}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(silent["updateStatus"], "failed", "{silent}");
    let attempt = &silent["updateAttempts"][0];
    assert_eq!(attempt["status"], "failed", "{silent}");
    assert_eq!(attempt["targetCommit"], v2.as_str());
    assert!(attempt["rolloutUuid"].is_null());
    assert!(!attempt["finishedAt"].is_null());
    assert_eq!(
        attempt["detail"], "the unit did not report the target commit within 3 s",
        "{silent}"
    );

    let prompt = status(&fx, &units[1]).await;
    assert_eq!(prompt["updateStatus"], "done", "{prompt}");
    assert_eq!(prompt["updateAttempts"][0]["status"], "done", "{prompt}");
    assert!(prompt["updateAttempts"][0]["detail"].is_null());
}
