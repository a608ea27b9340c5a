//! API tokens: shown once and stored hashed, acting as their user (seeing only what the user may see), a
//! read-only token refused any mutation, and revoking, expiry and a blocked user ending a token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::units::{Fixture, device};
use common::{TestServer, code};
use pepeunit_backend::entities::api_tokens;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

const CREATE: &str = "mutation($n: String!, $s: ApiTokenScope!, $d: Int) {
    createApiToken(name: $n, scope: $s, expiresInDays: $d) { token apiToken { uuid name scope prefix lastUsedAt expiresAt } } }";

async fn create(server: &TestServer, session: &str, name: &str, scope: &str) -> (String, Value) {
    let (_, body) = server
        .gql(CREATE, json!({ "n": name, "s": scope }), Some(session))
        .await;
    let created = &body["data"]["createApiToken"];
    (
        created["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned(),
        created["apiToken"].clone(),
    )
}

async fn unit_names(server: &TestServer, token: &str) -> Vec<String> {
    let (_, body) = server
        .gql("{ units { items { name } } }", json!({}), Some(token))
        .await;
    let mut names: Vec<String> = body["data"]["units"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_read_token_sees_what_its_user_sees_and_cannot_write() {
    let fx = Fixture::new(|_| {}).await;
    let server = &fx.server;
    fx.create_unit(&fx.token, json!({ "name": "Public sensor" }))
        .await;
    let private = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Private sensor", "visibility": "PRIVATE" }),
        )
        .await;
    let (alice_read, listed) = create(server, &fx.token, "grafana", "READ").await;
    assert!(alice_read.starts_with("pepeunit_"), "{alice_read}");
    assert_eq!(listed["scope"], "READ");
    assert_eq!(
        listed["prefix"].as_str().unwrap(),
        &alice_read[.."pepeunit_".len() + 4]
    );
    let (_, bob) = server.user("bob").await;
    let (bob_read, _) = create(server, &bob, "script", "READ").await;

    assert_eq!(
        unit_names(server, &alice_read).await,
        ["Private sensor", "Public sensor"]
    );
    assert_eq!(unit_names(server, &bob_read).await, ["Public sensor"]);

    // Any mutation is refused before it runs, a named query beside it included.
    let rename =
        "mutation($u: ID!) { updateUnit(uuid: $u, input: { name: \"Renamed\" }) { name } }";
    let (_, body) = server
        .gql(rename, json!({ "u": private["uuid"] }), Some(&alice_read))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    assert!(body["data"].is_null(), "{body}");
    let (_, body) = server
        .gql(
            "query Q { me { login } } mutation M { logoutEverywhere }",
            json!({}),
            Some(&alice_read),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    assert_eq!(
        unit_names(server, &fx.token).await,
        ["Private sensor", "Public sensor"]
    );

    // Tokens never manage tokens: not even a write token.
    let (alice_write, _) = create(server, &fx.token, "deploy", "WRITE").await;
    for token in [&alice_read, &alice_write] {
        let (_, body) = server
            .gql("{ apiTokens { uuid } }", json!({}), Some(token))
            .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let (_, body) = server
            .gql(CREATE, json!({ "n": "more", "s": "WRITE" }), Some(token))
            .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }
    // The token was used: the list says when.
    let (_, body) = server
        .gql(
            "{ apiTokens { name lastUsedAt } }",
            json!({}),
            Some(&fx.token),
        )
        .await;
    let grafana = body["data"]["apiTokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "grafana")
        .unwrap()
        .clone();
    assert!(grafana["lastUsedAt"].is_string(), "{body}");
}

#[tokio::test]
async fn a_write_token_writes_until_revoked_and_a_blocked_user_ends_it() {
    let fx = Fixture::new(|_| {}).await;
    let server = &fx.server;
    let sensor = device(&fx, "Sensor").await;
    let (write, listed) = create(server, &fx.token, "deploy", "WRITE").await;
    let rename =
        "mutation($u: ID!, $n: String!) { updateUnit(uuid: $u, input: { name: $n }) { name } }";
    let (_, body) = server
        .gql(
            rename,
            json!({ "u": sensor.uuid, "n": "Renamed" }),
            Some(&write),
        )
        .await;
    assert_eq!(body["data"]["updateUnit"]["name"], "Renamed", "{body}");

    // Shown once, stored as a hash only.
    let rows = api_tokens::Entity::find()
        .all(server.services.db())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].token_hash, write);
    assert!(!rows[0].token_hash.contains(&write[9..]));

    let (_, body) = server
        .gql(
            "mutation($u: ID!) { revokeApiToken(uuid: $u) }",
            json!({ "u": listed["uuid"] }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(body["data"]["revokeApiToken"], true, "{body}");
    let (status, body) = server
        .gql("{ me { login } }", json!({}), Some(&write))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // An expired token is refused.
    let (expiring, listed) = create(server, &fx.token, "short", "READ").await;
    let uuid: uuid::Uuid = listed["uuid"].as_str().unwrap().parse().unwrap();
    api_tokens::Entity::update_many()
        .col_expr(
            api_tokens::Column::ExpiresAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(api_tokens::Column::Uuid.eq(uuid))
        .exec(server.services.db())
        .await
        .unwrap();
    let (status, _) = server
        .gql("{ me { login } }", json!({}), Some(&expiring))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A token of a user an admin blocks stops working; an unknown token never worked.
    let (bob_uuid, bob) = server.user("bob").await;
    let (bob_read, _) = create(server, &bob, "script", "READ").await;
    let (_, body) = server
        .gql("{ me { login } }", json!({}), Some(&bob_read))
        .await;
    assert_eq!(body["data"]["me"]["login"], "bob");
    let (_, admin) = server.admin("root").await;
    let (_, body) = server
        .gql(
            "mutation($u: ID!) { setUserStatus(uuid: $u, status: BLOCKED) { status } }",
            json!({ "u": bob_uuid }),
            Some(&admin),
        )
        .await;
    assert_eq!(body["data"]["setUserStatus"]["status"], "BLOCKED", "{body}");
    let (status, _) = server
        .gql("{ me { login } }", json!({}), Some(&bob_read))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .gql(
            "{ me { login } }",
            json!({}),
            Some("pepeunit_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn names_expiry_and_the_per_user_cap_are_checked() {
    let server = TestServer::start().await;
    let (_, session) = server.user("alice").await;
    for (variables, field) in [
        (json!({ "n": "", "s": "READ" }), "name"),
        (json!({ "n": "x".repeat(101), "s": "READ" }), "name"),
        (json!({ "n": "ok", "s": "READ", "d": 0 }), "expiresInDays"),
        (
            json!({ "n": "ok", "s": "READ", "d": 3651 }),
            "expiresInDays",
        ),
    ] {
        let (_, body) = server.gql(CREATE, variables, Some(&session)).await;
        assert_eq!(code(&body), "VALIDATION", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let (_, body) = server
        .gql(
            CREATE,
            json!({ "n": "month", "s": "READ", "d": 30 }),
            Some(&session),
        )
        .await;
    assert!(
        body["data"]["createApiToken"]["apiToken"]["expiresAt"].is_string(),
        "{body}"
    );
    for i in 1..50 {
        create(&server, &session, &format!("t{i}"), "READ").await;
    }
    let (_, body) = server
        .gql(
            CREATE,
            json!({ "n": "one too many", "s": "READ" }),
            Some(&session),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
}
