//! repo_units against real git remotes on loopback: smart HTTP (public and basic-auth private) and file://.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::git::{GitHttpServer, SourceRepo};
use common::{TestServer, code};
use pepeunit_backend::services::repo_sync::RepoEvent;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CREATE: &str = "mutation($i: CreateRepoUnitInput!) { createRepoUnit(input: $i) { uuid name cloneUrl defaultBranch isPrivateRepository lastSyncedAt lastSyncError webhookPath webhookSecret } }";
const FULL: &str = "query($u: ID!) { repoUnit(uuid: $u) { uuid name visibility defaultBranch lastSyncedAt lastSyncError webhookSecret
    branches { name commit } tags { name commit } commits(limit: 10) { id summary author }
    main: checkCommit { commit usable problems envExample schemaExample } } }";

async fn local_server() -> TestServer {
    TestServer::start_with(|c| c.allow_local_remotes = true).await
}

async fn create(server: &TestServer, token: &str, input: Value) -> Value {
    server
        .gql(CREATE, json!({ "i": input }), Some(token))
        .await
        .1
}

fn mirrors(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.db.data_dir().join("repositories"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn public_repo_over_http_is_mirrored_listed_and_checked() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "fan");
    source.write("schema_example.json", "{\"input_topic\": [\"bad topic\"]}");
    let broken = source.commit("break the schema");
    git_branch(&source, "broken");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = local_server().await;
    let (_, token) = server.user("alice").await;

    let body = create(
        &server,
        &token,
        json!({ "name": "Fan controller", "cloneUrl": http.url("fan") }),
    )
    .await;
    let repo = &body["data"]["createRepoUnit"];
    assert_eq!(repo["name"], "Fan controller", "{body}");
    assert_eq!(repo["defaultBranch"], "main");
    assert!(repo["lastSyncedAt"].is_string());
    assert!(repo["webhookSecret"].as_str().unwrap().len() >= 32);
    assert_eq!(
        mirrors(&server),
        vec![repo["uuid"].as_str().unwrap().to_owned()]
    );

    let (_, body) = server
        .gql(FULL, json!({ "u": repo["uuid"] }), Some(&token))
        .await;
    let full = &body["data"]["repoUnit"];
    let names = |key: &str| {
        full[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("branches"), ["broken", "dev", "main"], "{body}");
    assert_eq!(names("tags"), ["v1"]);
    let summaries: Vec<&str> = full["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries, ["firmware v1", "readme only"]);
    assert_eq!(full["main"]["usable"], true, "{body}");
    assert_eq!(full["main"]["envExample"]["WIFI_SSID"], "ssid");
    assert_eq!(
        full["main"]["schemaExample"]["output_topic"][0],
        "current_temp/pepeunit"
    );

    let check = "query($u: ID!, $r: String!) { repoUnit(uuid: $u) { checkCommit(revision: $r) { commit usable problems } } }";
    let (_, body) = server
        .gql(
            check,
            json!({ "u": repo["uuid"], "r": broken }),
            Some(&token),
        )
        .await;
    let verdict = &body["data"]["repoUnit"]["checkCommit"];
    assert_eq!(verdict["usable"], false);
    assert!(
        verdict["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("schema_example.json: "),
        "{verdict}"
    );

    let (_, body) = server
        .gql(
            check,
            json!({ "u": repo["uuid"], "r": "v1~1" }),
            Some(&token),
        )
        .await;
    let problems = body["data"]["repoUnit"]["checkCommit"]["problems"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        problems.iter().any(|p| p
            .as_str()
            .unwrap()
            .starts_with("env_example.json: the file is missing")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| {
        p.as_str()
            .unwrap()
            .starts_with("schema_example.json: the file is missing")
    }));

    let (_, body) = server
        .gql(
            check,
            json!({ "u": repo["uuid"], "r": "no-such-branch" }),
            Some(&token),
        )
        .await;
    assert_eq!(code(&body), "VALIDATION");
}

/// Moves the last commit of `main` onto a new branch `name`.
fn git_branch(source: &SourceRepo, name: &str) {
    common::git::git(&source.work, &["branch", name]);
    common::git::git(&source.work, &["reset", "-q", "--hard", "HEAD~1"]);
    source.publish();
}

#[tokio::test]
async fn private_repo_needs_the_right_credentials_which_never_come_back() {
    let remotes = tempfile::tempdir().unwrap();
    SourceRepo::firmware(remotes.path(), "secret");
    let http = GitHttpServer::start(
        remotes.path(),
        Some(("deploy", "s3cr3t-t0ken-value")),
        Duration::ZERO,
    )
    .await;
    let server = TestServer::start_with(|c| {
        c.allow_local_remotes = true;
        c.database_url = None;
    })
    .await;
    let (_, token) = server.user("alice").await;

    let body = create(
        &server,
        &token,
        json!({ "name": "secret", "cloneUrl": http.url("secret"), "isPrivateRepository": true }),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION");
    assert_eq!(body["errors"][0]["extensions"]["field"], "credentials");

    let body = create(
        &server,
        &token,
        json!({ "name": "secret", "cloneUrl": http.url("secret"), "isPrivateRepository": true,
        "credentials": { "username": "deploy", "password": "wrong-token" } }),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "credentials");
    assert!(mirrors(&server).is_empty(), "nothing left behind");

    let body = create(
        &server,
        &token,
        json!({ "name": "secret", "cloneUrl": http.url("secret"), "isPrivateRepository": true,
        "credentials": { "username": "deploy", "password": "s3cr3t-t0ken-value" } }),
    )
    .await;
    let uuid = body["data"]["createRepoUnit"]["uuid"].clone();
    assert!(uuid.is_string(), "{body}");
    let (_, full) = server.gql(FULL, json!({ "u": uuid }), Some(&token)).await;
    let (_, synced) = server
        .gql(
            "mutation($u: ID!) { syncRepoUnit(uuid: $u) { lastSyncError } }",
            json!({ "u": uuid }),
            Some(&token),
        )
        .await;
    assert!(
        synced["data"]["syncRepoUnit"]["lastSyncError"].is_null(),
        "{synced}"
    );
    for response in [&body, &full, &synced] {
        assert!(
            !response.to_string().contains("s3cr3t-t0ken-value"),
            "credentials leaked: {response}"
        );
    }
    let mut stored = std::fs::read(server.db.data_dir().join("pepeunit.db")).unwrap();
    stored.extend(std::fs::read(server.db.data_dir().join("pepeunit.db-wal")).unwrap_or_default());
    assert!(
        !stored.windows(18).any(|w| w == b"s3cr3t-t0ken-value"),
        "credentials in the database in plaintext"
    );
}

#[tokio::test]
async fn local_and_file_remotes_are_refused_by_default() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = TestServer::start().await;
    let (_, token) = server.user("alice").await;
    let (_, admin) = server.admin("root").await;

    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": http.url("fan") }),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("allow_local_remotes"),
        "{body}"
    );
    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": source.file_url() }),
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("admins only"),
        "{body}"
    );
    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": "ssh://git@example.com/fan.git" }),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION");
    assert!(mirrors(&server).is_empty());

    let body = create(
        &server,
        &admin,
        json!({ "name": "fan", "cloneUrl": source.file_url() }),
    )
    .await;
    assert_eq!(
        body["data"]["createRepoUnit"]["defaultBranch"], "main",
        "{body}"
    );
}

#[tokio::test]
async fn oversized_repositories_are_cut_off_while_downloading() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "big");
    // Incompressible bytes, so the pack really is megabytes.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    source.write("firmware.bin", noise);
    source.commit("add a big binary");
    source.publish();
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = TestServer::start_with(|c| {
        c.allow_local_remotes = true;
        c.repository_size_limit_bytes = 512 * 1024;
    })
    .await;
    let (_, token) = server.user("alice").await;
    let body = create(
        &server,
        &token,
        json!({ "name": "big", "cloneUrl": http.url("big") }),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("larger than the limit of 524288 bytes"),
        "{body}"
    );
    assert!(mirrors(&server).is_empty(), "no directory left behind");
    let (_, admin) = server.admin("root").await;
    let body = create(
        &server,
        &admin,
        json!({ "name": "big", "cloneUrl": http.url("big") }),
    )
    .await;
    assert!(body["errors"].is_null(), "admins are exempt: {body}");
}

#[tokio::test]
async fn url_is_fixed_other_settings_change_and_visibility_applies() {
    let remotes = tempfile::tempdir().unwrap();
    SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = local_server().await;
    let (_, alice) = server.user("alice").await;
    let (_, bob) = server.user("bob").await;
    let body = create(
        &server,
        &alice,
        json!({ "name": "fan", "cloneUrl": http.url("fan"), "visibility": "PRIVATE" }),
    )
    .await;
    let uuid = body["data"]["createRepoUnit"]["uuid"].clone();

    let update = "mutation($u: ID!, $i: UpdateRepoUnitInput!) { updateRepoUnit(uuid: $u, input: $i) { name visibility defaultBranch syncPeriodSeconds autoSync } }";
    let (_, body) = server
        .gql(
            update,
            json!({ "u": uuid, "i": { "cloneUrl": "https://example.com/other.git" } }),
            Some(&alice),
        )
        .await;
    assert_eq!(code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    let (_, body) = server
        .gql(
            update,
            json!({ "u": uuid, "i": { "defaultBranch": "nope" } }),
            Some(&alice),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "defaultBranch",
        "{body}"
    );
    let (_, body) = server
        .gql(
            update,
            json!({ "u": uuid, "i": { "syncPeriodSeconds": 5 } }),
            Some(&alice),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        "syncPeriodSeconds"
    );

    let (_, body) = server
        .gql(
            "query($u: ID!) { repoUnit(uuid: $u) { name } }",
            json!({ "u": uuid }),
            Some(&bob),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "private: bob cannot see it");
    let (_, body) = server
        .gql(
            update,
            json!({ "u": uuid, "i": { "name": "mine now" } }),
            Some(&bob),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND");

    let (_, body) = server
        .gql(update, json!({ "u": uuid, "i": { "name": "Fan v2", "visibility": "PUBLIC", "defaultBranch": "dev", "syncPeriodSeconds": 3600, "autoSync": false } }), Some(&alice))
        .await;
    assert_eq!(
        body["data"]["updateRepoUnit"],
        json!({ "name": "Fan v2", "visibility": "PUBLIC", "defaultBranch": "dev", "syncPeriodSeconds": 3600, "autoSync": false })
    );

    let seen = "query($u: ID!) { repoUnit(uuid: $u) { name cloneUrl webhookSecret } }";
    let (_, body) = server.gql(seen, json!({ "u": uuid }), None).await;
    assert_eq!(
        body["data"]["repoUnit"]["name"], "Fan v2",
        "public: anyone sees it"
    );
    assert!(body["data"]["repoUnit"]["webhookSecret"].is_null());
    let (_, body) = server
        .gql(
            update,
            json!({ "u": uuid, "i": { "name": "mine now" } }),
            Some(&bob),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "seeing is not editing");
    let (_, body) = server.gql("{ repoUnits { name } }", json!({}), None).await;
    assert_eq!(body["data"]["repoUnits"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_branch_move_fires_one_event_and_errors_show_on_the_node() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = local_server().await;
    let (_, token) = server.user("alice").await;
    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": http.url("fan") }),
    )
    .await;
    let uuid = body["data"]["createRepoUnit"]["uuid"].clone();
    let mut events = server.services.repo_sync().subscribe();

    source.write("main.py", "print('v2')\n");
    let new_commit = source.commit("firmware v2");
    source.publish();
    let sync = "mutation($u: ID!) { syncRepoUnit(uuid: $u) { lastSyncError lastSyncedAt } }";
    let (_, body) = server.gql(sync, json!({ "u": uuid }), Some(&token)).await;
    assert!(
        body["data"]["syncRepoUnit"]["lastSyncError"].is_null(),
        "{body}"
    );
    let event = events.try_recv().expect("an event");
    let RepoEvent::BranchMoved {
        branch,
        new,
        old,
        repo_unit,
    } = event;
    assert_eq!(
        (branch.as_str(), new.as_str()),
        ("main", new_commit.as_str())
    );
    assert!(old.is_some());
    assert_eq!(repo_unit.to_string(), uuid.as_str().unwrap());
    server.gql(sync, json!({ "u": uuid }), Some(&token)).await;
    assert!(events.try_recv().is_err(), "nothing moved, nothing fired");

    std::fs::rename(&source.bare, remotes.path().join("moved-away")).unwrap();
    let (_, body) = server.gql(sync, json!({ "u": uuid }), Some(&token)).await;
    let error = body["data"]["syncRepoUnit"]["lastSyncError"]
        .as_str()
        .expect("the failure is on the node");
    assert!(!error.is_empty());
    std::fs::rename(remotes.path().join("moved-away"), &source.bare).unwrap();
    let (_, body) = server.gql(sync, json!({ "u": uuid }), Some(&token)).await;
    assert!(
        body["data"]["syncRepoUnit"]["lastSyncError"].is_null(),
        "{body}"
    );
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn webhooks_sync_only_when_signed() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = local_server().await;
    let (_, token) = server.user("alice").await;
    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": http.url("fan") }),
    )
    .await;
    let repo = body["data"]["createRepoUnit"].clone();
    let secret = repo["webhookSecret"].as_str().unwrap().to_owned();
    let hook = server.url(repo["webhookPath"].as_str().unwrap());
    let mut events = server.services.repo_sync().subscribe();
    source.write("main.py", "print('v2')\n");
    source.commit("v2");
    source.publish();

    let payload = br#"{"ref": "refs/heads/main"}"#.to_vec();
    let send = |headers: Vec<(&'static str, String)>| {
        let mut request = server.client.post(&hook).body(payload.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    for headers in [
        vec![
            ("x-github-event", "push".to_owned()),
            ("x-hub-signature-256", github_signature("wrong", &payload)),
        ],
        vec![
            ("x-gitlab-event", "Push Hook".to_owned()),
            ("x-gitlab-token", "wrong".to_owned()),
        ],
        vec![("x-github-event", "push".to_owned())],
    ] {
        let response = send(headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err(), "no sync ran");

    let response = send(vec![
        ("x-github-event", "ping".to_owned()),
        ("x-hub-signature-256", github_signature(&secret, &payload)),
    ])
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(vec![
        ("x-github-event", "push".to_owned()),
        ("x-hub-signature-256", github_signature(&secret, &payload)),
    ])
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event, RepoEvent::BranchMoved { ref branch, .. } if branch == "main"));

    source.write("main.py", "print('v3')\n");
    source.commit("v3");
    source.publish();
    let response = send(vec![
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("x-gitlab-token", secret.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn deletion_is_refused_while_units_use_the_repo() {
    let remotes = tempfile::tempdir().unwrap();
    SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = local_server().await;
    let (alice_uuid, token) = server.user("alice").await;
    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": http.url("fan") }),
    )
    .await;
    let uuid = body["data"]["createRepoUnit"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let unit = common::insert_unit(
        server.services.db(),
        alice_uuid.parse().unwrap(),
        uuid.parse().unwrap(),
        "fan-1",
    )
    .await;

    let delete = "mutation($u: ID!) { deleteRepoUnit(uuid: $u) }";
    let (_, body) = server.gql(delete, json!({ "u": uuid }), Some(&token)).await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(mirrors(&server).len(), 1);

    common::delete_unit(&server, unit).await;
    let (_, body) = server.gql(delete, json!({ "u": uuid }), Some(&token)).await;
    assert_eq!(body["data"]["deleteRepoUnit"], true, "{body}");
    assert!(mirrors(&server).is_empty(), "the mirror went with the node");
    let (_, body) = server
        .gql(
            "query($u: ID!) { repoUnit(uuid: $u) { name } }",
            json!({ "u": uuid }),
            Some(&token),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn twenty_syncs_at_once_do_not_stall_the_api() {
    let remotes = tempfile::tempdir().unwrap();
    for i in 0..20 {
        SourceRepo::firmware(remotes.path(), &format!("fw{i}"));
    }
    let fast = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let slow = GitHttpServer::start(remotes.path(), None, Duration::from_millis(700)).await;
    let server = TestServer::start_with(|c| {
        c.allow_local_remotes = true;
        c.sync_concurrency = 4;
    })
    .await;
    let (_, token) = server.admin("root").await;
    let mut uuids = Vec::new();
    for i in 0..20 {
        let body = create(
            &server,
            &token,
            json!({ "name": format!("fw{i}"), "cloneUrl": fast.url(&format!("fw{i}")) }),
        )
        .await;
        uuids.push(
            body["data"]["createRepoUnit"]["uuid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Point every mirror at the slow server, so each sync takes seconds.
    for (i, uuid) in uuids.iter().enumerate() {
        let mirror = server.db.data_dir().join("repositories").join(uuid);
        common::git::git(
            &mirror,
            &["remote", "set-url", "origin", &slow.url(&format!("fw{i}"))],
        );
    }
    let mut syncs = Vec::new();
    for uuid in &uuids {
        let (client, url, token, uuid) = (
            server.client.clone(),
            server.url("/graphql"),
            token.clone(),
            uuid.clone(),
        );
        syncs.push(tokio::spawn(async move {
            let query = json!({ "query": "mutation($u: ID!) { syncRepoUnit(uuid: $u) { lastSyncError } }", "variables": { "u": uuid } });
            client.post(url).bearer_auth(token).json(&query).send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    while server.services.repo_sync().running() < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let (status, body) = server
            .gql(
                "{ me { login } repoUnits(limit: 100) { name } }",
                json!({}),
                Some(&token),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["repoUnits"].as_array().unwrap().len(), 20);
    }
    assert!(
        server.services.repo_sync().running() > 0,
        "the queries answered while syncs were still running"
    );
    assert!(
        server.services.repo_sync().running() <= 4,
        "concurrency is bounded"
    );
    for sync in syncs {
        let body = sync.await.unwrap();
        assert!(
            body["data"]["syncRepoUnit"]["lastSyncError"].is_null(),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_scheduler_syncs_repos_that_are_due() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = TestServer::start_with(|c| {
        c.allow_local_remotes = true;
        c.sync_check_interval_seconds = 1;
    })
    .await;
    let (_, token) = server.user("alice").await;
    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": http.url("fan") }),
    )
    .await;
    let uuid: uuid::Uuid = body["data"]["createRepoUnit"]["uuid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut events = server.services.repo_sync().subscribe();
    source.write("main.py", "print('v2')\n");
    let commit = source.commit("v2");
    source.publish();
    common::mark_never_synced(&server, uuid).await;
    let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("the scheduler synced")
        .unwrap();
    let RepoEvent::BranchMoved { new, .. } = event;
    assert_eq!(new, commit);
}

async fn set_clone_url(server: &TestServer, uuid: uuid::Uuid, url: &str) {
    use pepeunit_backend::entities::repo_units;
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    let row = repo_units::Entity::find_by_id(uuid)
        .one(server.services.db())
        .await
        .unwrap()
        .unwrap();
    let mut active = row.into_active_model();
    active.clone_url = Set(url.to_owned());
    active.update(server.services.db()).await.unwrap();
}

/// DNS rebinding: a URL checked when it was stored, whose host now resolves to a loopback address, is
/// refused when the sync connects, both when the mirror is fetched and when it is cloned again; so is an
/// IP literal. `localhost` stands for the attacker's name: a host name the transport must resolve itself.
#[tokio::test]
async fn a_stored_url_that_now_resolves_to_loopback_is_refused_at_connect_time() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = TestServer::start().await;
    let (alice, token) = server.user("alice").await;
    let repo = common::insert_repo_unit(
        server.services.db(),
        alice.parse().unwrap(),
        pepeunit_protocol::Visibility::Public,
    )
    .await;
    let rebound = http.url("fan").replace("127.0.0.1", "localhost");
    set_clone_url(&server, repo, &rebound).await;
    let sync = "mutation($u: ID!) { syncRepoUnit(uuid: $u) { lastSyncError } }";
    let refused = |body: &Value| {
        body["data"]["syncRepoUnit"]["lastSyncError"]
            .as_str()
            .is_some_and(|e| e.contains("loopback or private address"))
    };

    let (_, body) = server.gql(sync, json!({ "u": repo }), Some(&token)).await;
    assert!(refused(&body), "a fresh clone is refused: {body}");
    let mirror = server
        .db
        .data_dir()
        .join("repositories")
        .join(repo.to_string());
    assert!(!mirror.exists(), "nothing was cloned");

    // A mirror cloned while the name still pointed outside, now fetched again.
    std::fs::create_dir_all(mirror.parent().unwrap()).unwrap();
    let old = common::git::git(&source.work, &["rev-parse", "HEAD"]);
    common::git::git(
        remotes.path(),
        &[
            "clone",
            "-q",
            "--bare",
            source.bare.to_str().unwrap(),
            mirror.to_str().unwrap(),
        ],
    );
    common::git::git(&mirror, &["remote", "set-url", "origin", &rebound]);
    source.write("main.py", "print('from inside')\n");
    source.commit("internal only");
    source.publish();
    let (_, body) = server.gql(sync, json!({ "u": repo }), Some(&token)).await;
    assert!(refused(&body), "a fetch is refused: {body}");
    assert_eq!(common::git::git(&mirror, &["rev-parse", "main"]), old);

    common::git::git(&mirror, &["remote", "set-url", "origin", &http.url("fan")]);
    let (_, body) = server.gql(sync, json!({ "u": repo }), Some(&token)).await;
    assert!(refused(&body), "an IP literal is refused: {body}");
    assert_eq!(common::git::git(&mirror, &["rev-parse", "main"]), old);
}

/// A replayed webhook delivery (same delivery id, same valid signature) starts no second fetch.
#[tokio::test]
async fn a_replayed_webhook_delivery_starts_nothing() {
    let remotes = tempfile::tempdir().unwrap();
    SourceRepo::firmware(remotes.path(), "fan");
    let http = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let server = local_server().await;
    let (_, token) = server.user("alice").await;
    let body = create(
        &server,
        &token,
        json!({ "name": "fan", "cloneUrl": http.url("fan") }),
    )
    .await;
    let repo = body["data"]["createRepoUnit"].clone();
    let secret = repo["webhookSecret"].as_str().unwrap().to_owned();
    let hook = server.url(repo["webhookPath"].as_str().unwrap());
    let payload = br#"{"ref": "refs/heads/main"}"#.to_vec();
    let send = || {
        server
            .client
            .post(&hook)
            .header("x-github-event", "push")
            .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("x-hub-signature-256", github_signature(&secret, &payload))
            .body(payload.clone())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    for _ in 0..5 {
        let replay = send().await.unwrap();
        assert_eq!(replay.status(), StatusCode::OK);
        let body: Value = replay.json().await.unwrap();
        assert_eq!(body["status"], "ignored: delivery already received");
    }
}

/// `git://` remotes go through the guarded transport too: cloned when local remotes are allowed, and
/// refused at connect time when they are not.
#[tokio::test]
async fn git_protocol_remotes_are_fetched_through_the_guard() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "fan");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let served = remotes.path().join("served");
    let mut daemon = tokio::process::Command::new("git")
        .arg("daemon")
        .arg("--reuseaddr")
        .arg("--export-all")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", served.display()))
        .arg(&served)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("git://127.0.0.1:{port}/fan.git");
    let server = local_server().await;
    let (_, token) = server.user("alice").await;
    let body = create(&server, &token, json!({ "name": "fan", "cloneUrl": url })).await;
    assert_eq!(
        body["data"]["createRepoUnit"]["defaultBranch"], "main",
        "{body}"
    );
    let head = common::git::git(&source.work, &["rev-parse", "HEAD"]);
    let uuid = body["data"]["createRepoUnit"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mirror = server.db.data_dir().join("repositories").join(&uuid);
    assert_eq!(common::git::git(&mirror, &["rev-parse", "main"]), head);

    let strict = TestServer::start().await;
    let (bob, bob_token) = strict.user("bob").await;
    let repo = common::insert_repo_unit(
        strict.services.db(),
        bob.parse().unwrap(),
        pepeunit_protocol::Visibility::Public,
    )
    .await;
    set_clone_url(&strict, repo, &url.replace("127.0.0.1", "localhost")).await;
    let (_, body) = strict
        .gql(
            "mutation($u: ID!) { syncRepoUnit(uuid: $u) { lastSyncError } }",
            json!({ "u": repo }),
            Some(&bob_token),
        )
        .await;
    assert!(
        body["data"]["syncRepoUnit"]["lastSyncError"]
            .as_str()
            .is_some_and(|e| e.contains("loopback or private address")),
        "{body}"
    );
    daemon.kill().await.unwrap();
    daemon.wait().await.unwrap();
}
