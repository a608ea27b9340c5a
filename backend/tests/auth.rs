//! Registration, login, refresh, revocation and account moderation, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use common::{PASSWORD, TestServer, code};
use pepeunit_backend::services::tokens::{Claims, TokenIssuer, TokenKind};
use reqwest::StatusCode;
use serde_json::json;

const ME: &str = "{ me { uuid login email role status } }";

#[tokio::test]
async fn register_login_me_refresh() {
    let server = TestServer::start().await;
    let user = server.register("alice").await;
    assert_eq!(user["login"], "alice");
    assert_eq!(user["status"], "VERIFIED");

    let (status, body) = server.login("Alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let login = &body["data"]["login"];
    assert_eq!(login["user"]["email"], "alice@example.com");
    let access = login["accessToken"].as_str().unwrap();
    let refresh = login["refreshToken"].as_str().unwrap();

    let (_, body) = server.gql(ME, json!({}), Some(access)).await;
    assert_eq!(body["data"]["me"]["login"], "alice");
    assert_eq!(body["data"]["me"]["role"], "USER");

    // Logging in by e-mail works too.
    let (_, body) = server.login("alice@example.com", PASSWORD).await;
    assert!(body["errors"].is_null(), "{body}");

    let (_, body) = server
        .gql(
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }",
            json!({ "t": refresh }),
            None,
        )
        .await;
    let new_access = body["data"]["refreshToken"]["accessToken"]
        .as_str()
        .unwrap();
    let (_, body) = server.gql(ME, json!({}), Some(new_access)).await;
    assert_eq!(body["data"]["me"]["login"], "alice");

    // An access token is not a refresh token.
    let (_, body) = server
        .gql(
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }",
            json!({ "t": access }),
            None,
        )
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let server = TestServer::start().await;
    server.register("bob").await;
    let (_, wrong_password) = server.login("bob", "not-the-password").await;
    let (_, unknown_user) = server.login("nobody", "not-the-password").await;
    assert_eq!(code(&wrong_password), "UNAUTHENTICATED");
    assert_eq!(
        wrong_password["errors"][0]["message"],
        unknown_user["errors"][0]["message"]
    );
    assert_eq!(
        wrong_password["errors"][0]["extensions"],
        unknown_user["errors"][0]["extensions"]
    );
    assert!(wrong_password["data"].is_null());
}

#[tokio::test]
async fn duplicate_and_invalid_registrations_are_refused_with_codes() {
    let server = TestServer::start().await;
    server.register("carol").await;
    let register = "mutation($i: RegisterInput!) { register(input: $i) { uuid } }";
    let cases = [
        (
            json!({ "login": "CAROL", "email": "other@example.com", "password": PASSWORD }),
            "CONFLICT",
            None,
        ),
        (
            json!({ "login": "carol2", "email": "carol@example.com", "password": PASSWORD }),
            "CONFLICT",
            None,
        ),
        (
            json!({ "login": "x", "email": "x@example.com", "password": PASSWORD }),
            "VALIDATION",
            Some("login"),
        ),
        (
            json!({ "login": "dave", "email": "nope", "password": PASSWORD }),
            "VALIDATION",
            Some("email"),
        ),
        (
            json!({ "login": "dave", "email": "d@example.com", "password": "short" }),
            "VALIDATION",
            Some("password"),
        ),
    ];
    for (input, want, field) in cases {
        let (_, body) = server.gql(register, json!({ "i": input }), None).await;
        assert_eq!(code(&body), want, "{input} -> {body}");
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["extensions"]["field"], field);
        }
    }
    let (_, admin) = server.admin("root").await;
    let (_, body) = server
        .gql("{ users { login } }", json!({}), Some(&admin))
        .await;
    assert_eq!(
        body["data"]["users"].as_array().unwrap().len(),
        2,
        "nothing half-created: {body}"
    );
}

#[tokio::test]
async fn closed_registration_and_manual_verification() {
    let server = TestServer::start().await;
    let (_, admin) = server.admin("root").await;
    let (_, anon_try) = server
        .gql("mutation { updateInstanceSettings(input: {registrationOpen: false}) { registrationOpen } }", json!({}), None)
        .await;
    assert_eq!(code(&anon_try), "UNAUTHENTICATED");

    let (_, body) = server
        .gql(
            "mutation { updateInstanceSettings(input: {registrationOpen: false}) { registrationOpen } }",
            json!({}),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["updateInstanceSettings"]["registrationOpen"],
        false
    );
    let (_, body) = server
        .gql(
            "mutation { register(input: {login: \"eve\", email: \"eve@example.com\", password: \"long-enough-1\"}) { uuid } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("registration is closed")
    );

    server
        .gql(
            "mutation { updateInstanceSettings(input: {registrationOpen: true, manualVerification: true}) { registrationOpen } }",
            json!({}),
            Some(&admin),
        )
        .await;
    let (_, settings) = server
        .gql(
            "{ instanceSettings { registrationOpen manualVerification } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(
        settings["data"]["instanceSettings"]["manualVerification"],
        true
    );

    let frank = server.register("frank").await;
    assert_eq!(frank["status"], "UNVERIFIED");
    let (_, body) = server.login("frank", PASSWORD).await;
    assert_eq!(code(&body), "FORBIDDEN");

    let (_, body) = server
        .gql(
            "mutation($u: ID!) { setUserStatus(uuid: $u, status: VERIFIED) { status } }",
            json!({ "u": frank["uuid"] }),
            Some(&admin),
        )
        .await;
    assert_eq!(body["data"]["setUserStatus"]["status"], "VERIFIED");
    let (_, body) = server.login("frank", PASSWORD).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[tokio::test]
async fn blocking_revokes_tokens_and_refuses_login() {
    let server = TestServer::start().await;
    let (_, admin) = server.admin("root").await;
    let (gina, token) = server.user("gina").await;
    let (_, body) = server.login("gina", PASSWORD).await;
    let refresh = body["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let (_, body) = server
        .gql(
            "mutation($u: ID!) { setUserStatus(uuid: $u, status: BLOCKED) { status } }",
            json!({ "u": gina }),
            Some(&token),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "a user cannot block anyone");

    server
        .gql(
            "mutation($u: ID!) { setUserStatus(uuid: $u, status: BLOCKED) { status } }",
            json!({ "u": gina }),
            Some(&admin),
        )
        .await;
    let (status, body) = server.gql(ME, json!({}), Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let (_, body) = server
        .gql(
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }",
            json!({ "t": refresh }),
            None,
        )
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let (_, body) = server.login("gina", PASSWORD).await;
    assert_eq!(code(&body), "FORBIDDEN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("blocked")
    );
}

#[tokio::test]
async fn password_change_and_logout_revoke_earlier_tokens() {
    let server = TestServer::start().await;
    let (_, token) = server.user("hank").await;
    let (_, body) = server
        .gql(
            "mutation { changePassword(oldPassword: \"wrong-password\", newPassword: \"brand-new-pass\") { accessToken } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");

    let (_, body) = server
        .gql(
            &format!("mutation {{ changePassword(oldPassword: \"{PASSWORD}\", newPassword: \"brand-new-pass\") {{ accessToken }} }}"),
            json!({}),
            Some(&token),
        )
        .await;
    let fresh = body["data"]["changePassword"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server.gql(ME, json!({}), Some(&token)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old token died with the old password"
    );
    let (_, body) = server.gql(ME, json!({}), Some(&fresh)).await;
    assert_eq!(body["data"]["me"]["login"], "hank");
    assert_eq!(
        code(&server.login("hank", PASSWORD).await.1),
        "UNAUTHENTICATED"
    );

    server
        .gql("mutation { logoutEverywhere }", json!({}), Some(&fresh))
        .await;
    let (status, _) = server.gql(ME, json!({}), Some(&fresh)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_early_and_foreign_tokens_are_refused() {
    let server = TestServer::start().await;
    let (uuid, _) = server.user("ivan").await;
    let now = Utc::now().timestamp();
    let claims = |nbf: i64, exp: i64| Claims {
        sub: uuid.parse().unwrap(),
        typ: TokenKind::Access,
        ver: 0,
        iat: now,
        nbf: now + nbf,
        exp: now + exp,
    };
    let tokens = server.services.tokens();
    let valid = tokens.sign(&claims(0, 600)).unwrap();
    let (_, body) = server.gql(ME, json!({}), Some(&valid)).await;
    assert_eq!(
        body["data"]["me"]["login"], "ivan",
        "control: a well-formed token works"
    );

    let foreign = TokenIssuer::new(
        b"some-other-instance-secret-key-0123456789",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    )
    .sign(&claims(0, 600))
    .unwrap();
    for (name, token) in [
        ("expired", tokens.sign(&claims(-7200, -3600)).unwrap()),
        ("not yet valid", tokens.sign(&claims(3600, 7200)).unwrap()),
        ("wrongly signed", foreign),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        let (status, body) = server.gql(ME, json!({}), Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(code(&body), "UNAUTHENTICATED", "{name}");
    }
}

#[tokio::test]
async fn repeated_failed_logins_from_one_address_get_429() {
    let server = TestServer::start_with(|c| c.login_max_failures = 3).await;
    server.register("judy").await;
    for _ in 0..3 {
        let (status, body) = server.login("judy", "wrong-password").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }
    let response = server
        .client
        .post(server.url("/graphql"))
        .json(&json!({ "query": format!("mutation {{ login(login: \"judy\", password: \"{PASSWORD}\") {{ accessToken }} }}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_some());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "RATE_LIMITED");
}

#[tokio::test]
async fn email_is_private_to_owner_and_admins() {
    let server = TestServer::start().await;
    let (_, admin) = server.admin("root").await;
    let (kim, kim_token) = server.user("kim").await;
    let (_, leo_token) = server.user("leo").await;
    let query = "query($u: ID!) { user(uuid: $u) { login email } }";
    let vars = json!({ "u": kim });
    assert_eq!(
        server.gql(query, vars.clone(), Some(&kim_token)).await.1["data"]["user"]["email"],
        "kim@example.com"
    );
    assert_eq!(
        server.gql(query, vars.clone(), Some(&admin)).await.1["data"]["user"]["email"],
        "kim@example.com"
    );
    assert!(
        server.gql(query, vars.clone(), Some(&leo_token)).await.1["data"]["user"]["email"]
            .is_null()
    );
    assert_eq!(
        code(&server.gql(query, vars, None).await.1),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        code(
            &server
                .gql("{ users { login } }", json!({}), Some(&leo_token))
                .await
                .1
        ),
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed() {
    let server = TestServer::start().await;
    let (root, admin) = server.admin("root").await;
    let (_, body) = server
        .gql(
            "mutation($u: ID!) { setUserRole(uuid: $u, role: USER) { role } }",
            json!({ "u": root }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT");
    let (_, body) = server
        .gql(
            "mutation($u: ID!) { deleteUser(uuid: $u) }",
            json!({ "u": root }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT");
}

const SET_STATUS: &str =
    "mutation($u: ID!, $s: UserStatus!) { setUserStatus(uuid: $u, status: $s) { status } }";

/// The last active admin can neither block nor unverify nor demote themselves: someone must be able
/// to administer the instance. With a second admin, stepping down works.
#[tokio::test]
async fn the_last_active_admin_cannot_lock_everyone_out() {
    let server = TestServer::start().await;
    let (root, admin) = server.admin("root").await;
    for status in ["UNVERIFIED", "BLOCKED"] {
        let (_, body) = server
            .gql(SET_STATUS, json!({ "u": root, "s": status }), Some(&admin))
            .await;
        assert_eq!(code(&body), "CONFLICT", "{status}: {body}");
    }
    let (_, body) = server
        .gql(
            "mutation($u: ID!) { setUserRole(uuid: $u, role: USER) { role } }",
            json!({ "u": root }),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    let (_, body) = server.gql(ME, json!({}), Some(&admin)).await;
    assert_eq!(body["data"]["me"]["login"], "root", "still in: {body}");

    let (other, other_token) = server.admin("deputy").await;
    let (_, body) = server
        .gql(
            SET_STATUS,
            json!({ "u": root, "s": "UNVERIFIED" }),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["setUserStatus"]["status"], "UNVERIFIED",
        "{body}"
    );
    let (status, _) = server.gql(ME, json!({}), Some(&admin)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "unverified: tokens revoked"
    );
    let (_, body) = server
        .gql(
            SET_STATUS,
            json!({ "u": other, "s": "UNVERIFIED" }),
            Some(&other_token),
        )
        .await;
    assert_eq!(
        code(&body),
        "CONFLICT",
        "now the deputy is the last: {body}"
    );
}

/// No leeway: a token that expired three seconds ago is refused.
#[tokio::test]
async fn a_token_expired_seconds_ago_is_refused() {
    let server = TestServer::start().await;
    let (uuid, _) = server.user("kate").await;
    let now = Utc::now().timestamp();
    let token = server
        .services
        .tokens()
        .sign(&Claims {
            sub: uuid.parse().unwrap(),
            typ: TokenKind::Access,
            ver: 0,
            iat: now - 60,
            nbf: now - 60,
            exp: now - 3,
        })
        .unwrap();
    let (status, body) = server.gql(ME, json!({}), Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
