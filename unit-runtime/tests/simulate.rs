//! The fleet simulator against a real in-process server: units created through the API and linked in a
//! ring pass every message, a rollout to a new commit completes with every virtual unit downloading the
//! firmware and reporting the commit, and the saved env.json files run again as a fleet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../backend/tests/common/mod.rs"]
mod common;

use clap::Parser;
use common::PASSWORD;
use common::units::Fixture;
use pepeunit_unit_runtime::simulate::{self, Report, SimulateArgs};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

async fn simulate(args: &[&str]) -> Report {
    let cli = Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).unwrap();
    simulate::run(cli.args).await.unwrap()
}

const UNITS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_fleet_passes_every_message_and_completes_a_rollout() {
    let fixture = Fixture::new(|_| {}).await;
    let first = common::git::git(&fixture.source.work, &["rev-parse", "HEAD"]);
    fixture.source.write("main.py", "print('v2')\n");
    let second = fixture.source.commit("firmware v2");
    fixture.push_and_sync().await;
    let envs = tempfile::tempdir().unwrap();
    let count = UNITS.to_string();
    let env_dir = envs.path().to_str().unwrap();

    let report = simulate(&[
        "--server",
        &fixture.server.base,
        "--login",
        "alice",
        "--password",
        PASSWORD,
        "--repo-unit",
        &fixture.repo_unit,
        "--count",
        &count,
        "--pin",
        &first,
        "--link",
        "--save-env",
        env_dir,
        "--rate",
        "5",
        "--seconds",
        "2",
        // State every second from every unit: the rollout's wave transactions race these writes (on
        // SQLite a deferred transaction lost such races with SQLITE_BUSY_SNAPSHOT and halted the rollout).
        "--state-interval",
        "1",
        "--rollout-to",
        &second,
        "--rollout-batch",
        "8",
        "--rollout-wave-timeout",
        "30",
    ])
    .await;
    println!("{report}");
    assert_eq!(report.units, UNITS);
    assert_eq!(report.connected, UNITS as u64);
    assert_eq!(report.connect_failures, 0);
    assert!(report.sent >= UNITS as u64 * 5, "{report}");
    assert_eq!(report.received, report.sent, "{report}");
    assert!(report.latency.is_some(), "{report}");
    let rollout = report.rollout.as_ref().unwrap();
    assert_eq!(rollout.status, "completed", "{report}");
    assert_eq!(rollout.waves, 3, "{report}");
    assert_eq!(report.updates_applied, UNITS as u64, "{report}");
    assert_eq!(report.update_failures, 0, "{report}");
    assert!(report.downloaded_bytes > 0);

    // The server agrees: every unit reported the new commit.
    let (_, body) = fixture
        .server
        .gql(
            "query($r: ID) { units(repoUnitUuid: $r, limit: 50) { items { reportedCommit updateStatus } } }",
            json!({ "r": fixture.repo_unit }),
            Some(&fixture.token),
        )
        .await;
    let items = body["data"]["units"]["items"].as_array().unwrap();
    assert_eq!(items.len(), UNITS, "{body}");
    for unit in items {
        assert_eq!(unit["reportedCommit"], json!(second), "{unit}");
        assert_eq!(unit["updateStatus"], "done", "{unit}");
    }

    // The saved env.json files run the same fleet again, links included.
    let report = simulate(&["--env-dir", env_dir, "--rate", "5", "--seconds", "1"]).await;
    assert_eq!(report.units, UNITS);
    assert_eq!(report.connected, UNITS as u64, "{report}");
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.received, report.sent, "{report}");
    // Their env.json still names the first commit, and the retained update command the second.
    assert_eq!(report.updates_applied, UNITS as u64, "{report}");
    assert_eq!(report.update_failures, 0, "{report}");
}

#[tokio::test]
async fn arguments_are_checked() {
    assert!(
        Cli::try_parse_from(["simulate"]).is_err(),
        "a unit source is required"
    );
    assert!(
        Cli::try_parse_from(["simulate", "--repo-unit", &uuid::Uuid::new_v4().to_string()])
            .is_err(),
        "--repo-unit needs a server and credentials"
    );
    assert!(Cli::try_parse_from(["simulate", "--env-dir", "x", "--qos", "3"]).is_err());
    let missing = tempfile::tempdir().unwrap();
    let cli =
        Cli::try_parse_from(["simulate", "--env-dir", missing.path().to_str().unwrap()]).unwrap();
    let error = simulate::run(cli.args).await.unwrap_err();
    assert!(error.to_string().contains("no env.json files"), "{error}");
}
