//! E-mail against a real SMTP server (aiosmtpd on loopback): verification on registration and password
//! reset, following the link from the received mail; used, expired and unknown links are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::smtp::SmtpServer;
use common::{PASSWORD, TestServer, code};
use pepeunit_backend::config::Secret;
use serde_json::{Value, json};

const FROM: &str = "Pepeunit <noreply@example.com>";

async fn start(
    smtp: &SmtpServer,
    adjust: impl FnOnce(&mut pepeunit_backend::Config),
) -> TestServer {
    let url = smtp.url();
    TestServer::start_with(move |c| {
        c.smtp_url = Some(Secret::new(url));
        c.smtp_from = Some(FROM.into());
        adjust(c);
    })
    .await
}

/// The token from a link the server mailed, after checking it points at the web app.
fn token(server: &TestServer, link: &str, path: &str) -> String {
    let prefix = format!("{}{path}", server.base);
    link.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link} does not start with {prefix}"))
        .to_owned()
}

async fn verify(server: &TestServer, token: &str) -> Value {
    server
        .gql(
            "mutation($t: String!) { verifyEmail(token: $t) }",
            json!({ "t": token }),
            None,
        )
        .await
        .1
}

async fn request_reset(server: &TestServer, email: &str) -> Value {
    server
        .gql(
            "mutation($e: String!) { requestPasswordReset(email: $e) }",
            json!({ "e": email }),
            None,
        )
        .await
        .1
}

async fn reset(server: &TestServer, token: &str, password: &str) -> Value {
    server
        .gql(
            "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }",
            json!({ "t": token, "p": password }),
            None,
        )
        .await
        .1
}

#[tokio::test]
async fn registration_mails_a_link_that_verifies_the_account() {
    let smtp = SmtpServer::start().await;
    let server = start(&smtp, |_| {}).await;
    let (_, admin) = server.admin("root").await;
    let (_, body) = server
        .gql(
            "mutation { updateInstanceSettings(input: { emailVerification: true }) { emailVerification mailEnabled } }",
            json!({}),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["updateInstanceSettings"],
        json!({ "emailVerification": true, "mailEnabled": true }),
        "{body}"
    );

    let bob = server.register("bob").await;
    assert_eq!(bob["status"], "UNVERIFIED", "{bob}");
    let (_, refused) = server.login("bob", PASSWORD).await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");

    let mail = smtp.wait_for("bob@example.com", 1).await;
    assert!(mail.raw.contains("noreply@example.com"), "{}", mail.raw);
    let link = mail.link("/verify?token=");
    // The link opens the server's page that confirms the address.
    let page = server.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("verifyEmail"));
    let token = token(&server, &link, "/verify?token=");
    let body = verify(&server, &token).await;
    assert_eq!(body["data"]["verifyEmail"], true, "{body}");
    let (_, body) = server.login("bob", PASSWORD).await;
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");

    // The same link again, and a made-up one, are refused.
    for token in [token.as_str(), "not-a-token"] {
        let body = verify(&server, token).await;
        assert_eq!(code(&body), "VALIDATION", "{body}");
    }

    // Without the switch, a new account is verified at once and gets no mail.
    server
        .gql(
            "mutation { updateInstanceSettings(input: { emailVerification: false }) { emailVerification } }",
            json!({}),
            Some(&admin),
        )
        .await;
    let carol = server.register("carol").await;
    assert_eq!(carol["status"], "VERIFIED", "{carol}");
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once_and_ends_every_session() {
    let smtp = SmtpServer::start().await;
    let server = start(&smtp, |_| {}).await;
    server.register("alice").await;
    let (_, session) = server.login("alice", PASSWORD).await;
    let refresh = session["data"]["login"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same answer for an address with an account and one without.
    // (The unknown address goes first: the worker is done with it when alice's mail arrives.)
    let unknown = request_reset(&server, "nobody@example.com").await;
    let known = request_reset(&server, "alice@example.com").await;
    assert_eq!(known, json!({ "data": { "requestPasswordReset": true } }));
    assert_eq!(unknown, known);

    let mail = smtp.wait_for("alice@example.com", 1).await;
    let token = token(&server, &mail.link("/reset?token="), "/reset?token=");
    // A password the rules refuse does not use the link up.
    let body = reset(&server, &token, "short").await;
    assert_eq!(code(&body), "VALIDATION", "{body}");
    let body = reset(&server, &token, "a-brand-new-password").await;
    assert_eq!(body["data"]["resetPassword"], true, "{body}");

    let (_, old) = server.login("alice", PASSWORD).await;
    assert_eq!(code(&old), "UNAUTHENTICATED", "{old}");
    let (_, new) = server.login("alice", "a-brand-new-password").await;
    assert!(new["data"]["login"]["accessToken"].is_string(), "{new}");
    let (_, body) = server
        .gql(
            "mutation($r: String!) { refreshToken(refreshToken: $r) { accessToken } }",
            json!({ "r": refresh }),
            None,
        )
        .await;
    assert_eq!(
        code(&body),
        "UNAUTHENTICATED",
        "the old session ended: {body}"
    );

    let again = reset(&server, &token, "yet-another-password").await;
    assert_eq!(code(&again), "VALIDATION", "{again}");
    let (_, still) = server.login("alice", "a-brand-new-password").await;
    assert!(still["data"]["login"]["accessToken"].is_string(), "{still}");
    // Nothing was mailed to the address without an account.
    assert_eq!(smtp.mails().len(), 1, "{:?}", smtp.mails());
}

#[tokio::test]
async fn an_expired_link_is_refused_and_requests_are_rate_limited() {
    let smtp = SmtpServer::start().await;
    let server = start(&smtp, |c| {
        c.mail_link_ttl_seconds = 1;
        c.mail_requests_per_hour = 2;
    })
    .await;
    server.register("dave").await;
    let body = request_reset(&server, "dave@example.com").await;
    assert_eq!(body["data"]["requestPasswordReset"], true, "{body}");
    let mail = smtp.wait_for("dave@example.com", 1).await;
    let token = token(&server, &mail.link("/reset?token="), "/reset?token=");
    // Past the link's one second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let body = reset(&server, &token, "a-brand-new-password").await;
    assert_eq!(code(&body), "VALIDATION", "{body}");
    let (_, body) = server.login("dave", PASSWORD).await;
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");

    request_reset(&server, "dave@example.com").await;
    let third = request_reset(&server, "dave@example.com").await;
    assert_eq!(code(&third), "RATE_LIMITED", "{third}");
}

#[tokio::test]
async fn without_smtp_email_verification_cannot_be_turned_on() {
    let server = TestServer::start().await;
    let (_, admin) = server.admin("root").await;
    let (_, body) = server
        .gql(
            "mutation { updateInstanceSettings(input: { emailVerification: true }) { emailVerification } }",
            json!({}),
            Some(&admin),
        )
        .await;
    assert_eq!(code(&body), "VALIDATION", "{body}");
    let body = request_reset(&server, "root@example.com").await;
    assert_eq!(code(&body), "UNAVAILABLE", "{body}");
    let (_, settings) = server
        .gql(
            "{ instanceSettings { mailEnabled emailVerification } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(
        settings["data"]["instanceSettings"],
        json!({ "mailEnabled": false, "emailVerification": false })
    );
}
