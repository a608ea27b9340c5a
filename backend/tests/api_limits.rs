//! Bad input at the HTTP/GraphQL edge: refused with a code, and nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, code};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn user_count(server: &TestServer) -> usize {
    let (_, admin) = server
        .admin(&format!(
            "adm{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .await;
    let (_, body) = server
        .gql("{ users(limit: 10) { login } }", json!({}), Some(&admin))
        .await;
    body["data"]["users"].as_array().map_or(0, Vec::len) - 1
}

async fn raw_post(server: &TestServer, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

const REGISTER: &str = r#"mutation { register(input: {login: "mallory", email: "m@example.com", password: "long-enough-1"}) { uuid } }"#;

#[tokio::test]
async fn malformed_json_is_400_with_a_code() {
    let server = TestServer::start().await;
    let (status, body) = raw_post(
        &server,
        "application/json",
        br#"{"query": "mutation { regis"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "BAD_REQUEST");
    let (status, _) = raw_post(&server, "text/plain", REGISTER.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(user_count(&server).await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let server = TestServer::start_with(|c| c.max_body_bytes = 4096).await;
    let padding = " ".repeat(8192);
    let body = serde_json::to_vec(&json!({ "query": format!("{REGISTER}{padding}") })).unwrap();
    let (status, body) = raw_post(&server, "application/json", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE");

    // Without a Content-Length the limit holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 3000]), Ok(vec![b' '; 3000])];
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(user_count(&server).await, 0);
}

#[tokio::test]
async fn batches_are_refused_whole() {
    let server = TestServer::start().await;
    let batch = serde_json::to_vec(
        &json!([{ "query": REGISTER }, { "query": "{ instanceSettings { registrationOpen } }" }]),
    )
    .unwrap();
    let (status, body) = raw_post(&server, "application/json", batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "BATCH_NOT_ALLOWED");
    assert_eq!(user_count(&server).await, 0);
}

#[tokio::test]
async fn too_deep_and_too_complex_queries_are_refused() {
    let server = TestServer::start_with(|c| {
        c.graphql_max_depth = 6;
        c.graphql_max_complexity = 50;
    })
    .await;
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
    let (_, body) = server.gql(deep, json!({}), None).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(body["data"].is_null());

    let wide: String = (0..60)
        .map(|i| format!("a{i}: instanceSettings {{ registrationOpen }} "))
        .collect();
    let (_, body) = server.gql(&format!("{{ {wide} }}"), json!({}), None).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");

    // A complex mutation is refused before it runs.
    let many: String = (0..60)
        .map(|i| format!("r{i}: register(input: {{login: \"user{i}\", email: \"u{i}@example.com\", password: \"long-enough-1\"}}) {{ uuid }} "))
        .collect();
    let (_, body) = server
        .gql(&format!("mutation {{ {many} }}"), json!({}), None)
        .await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert_eq!(user_count(&server).await, 0);
}

#[tokio::test]
async fn unknown_fields_and_arguments_are_validation_errors() {
    let server = TestServer::start().await;
    for query in [
        "{ instanceSettings { noSuchField } }",
        "{ noSuchQuery }",
        r#"mutation { register(input: {login: "mallory", email: "m@example.com", password: "long-enough-1", isAdmin: true}) { uuid } }"#,
        "{ instanceSettings { registrationOpen ",
    ] {
        let (_, body) = server.gql(query, json!({}), None).await;
        assert_eq!(
            code(&body),
            "GRAPHQL_VALIDATION_FAILED",
            "{query} -> {body}"
        );
    }
    assert_eq!(user_count(&server).await, 0);
}

#[tokio::test]
async fn health_metrics_graphiql_and_unknown_routes() {
    let server = TestServer::start().await;
    let health: Value = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let graphiql = server
        .client
        .get(server.url("/graphql"))
        .send()
        .await
        .unwrap();
    assert_eq!(graphiql.status(), StatusCode::OK);
    assert!(
        graphiql
            .text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );

    let missing = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"pepeunit_http_requests_total{method="GET",route="/health",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("pepeunit_http_request_duration_seconds_bucket"));
    assert!(!metrics.contains("/nope"), "raw paths never become labels");
}

/// 120 aliases of a unit's logs at limit 1000 in a 6 KB request would make the database count and read
/// 120,000 rows; lists are charged by their limit and their queries, so it is refused before it runs,
/// and the server stays healthy. One such page alone is fine.
#[tokio::test]
async fn aliased_log_pages_are_charged_by_their_limit() {
    let server = TestServer::start().await;
    let (_, token) = server.user("alice").await;
    let uuid = uuid::Uuid::new_v4();
    let aliases: String = (0..120)
        .map(|i| {
            format!("a{i}: unit(uuid: \"{uuid}\") {{ logs(limit: 1000) {{ items {{ text }} }} }} ")
        })
        .collect();
    let (_, body) = server
        .gql(&format!("{{ {aliases} }}"), json!({}), Some(&token))
        .await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(body["data"].is_null(), "{body}");
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let one =
        format!("{{ unit(uuid: \"{uuid}\") {{ logs(limit: 1000) {{ items {{ text }} }} }} }}");
    let (_, body) = server.gql(&one, json!({}), Some(&token)).await;
    assert_eq!(code(&body), "NOT_FOUND", "one page runs: {body}");
}

/// A 900 KB search text is a validation error, not an internal one.
#[tokio::test]
async fn an_oversized_search_is_a_validation_error() {
    let server = TestServer::start().await;
    let (_, token) = server.user("alice").await;
    let search = "x".repeat(900 * 1024);
    let (_, body) = server
        .gql(
            "query($s: String) { units(search: $s) { total } }",
            json!({ "s": search }),
            Some(&token),
        )
        .await;
    assert_eq!(code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "search", "{body}");
}

/// Every response carries the browser security headers; HTML pages get their inline scripts allowed
/// by hash in their Content-Security-Policy.
#[tokio::test]
async fn responses_carry_security_headers() {
    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("index.html"),
        "<!doctype html><script type=\"module\">init();</script>",
    )
    .unwrap();
    std::fs::write(app.path().join("app.js"), "export {};").unwrap();
    let dir = app.path().to_path_buf();
    let server = TestServer::start_with(move |c| c.frontend_dir = dir).await;
    let graphql = server
        .client
        .post(server.url("/graphql"))
        .json(&json!({ "query": "{ instanceSettings { registrationOpen } }" }))
        .send()
        .await
        .unwrap();
    let index = server.client.get(server.url("/")).send().await.unwrap();
    let script = server
        .client
        .get(server.url("/app.js"))
        .send()
        .await
        .unwrap();
    for response in [&graphql, &index, &script] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
            "{csp}"
        );
    }
    let csp = index.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("'sha256-"), "the page's inline script: {csp}");
    assert_eq!(
        index.text().await.unwrap(),
        "<!doctype html><script type=\"module\">init();</script>"
    );

    // The app's files are counted under one route label, not as unmatched.
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("route=\"/app\""), "{metrics}");
}

/// `/metrics` answers only loopback clients that are not relayed by a proxy, or anyone with the token.
#[tokio::test]
async fn metrics_need_a_token_or_a_direct_loopback_client() {
    let server = TestServer::start().await;
    let get = |headers: Vec<(&'static str, &'static str)>| {
        let mut request = server.client.get(server.url("/metrics"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    assert_eq!(get(vec![]).await.unwrap().status(), StatusCode::OK);
    let relayed = get(vec![("x-forwarded-for", "203.0.113.9")]).await.unwrap();
    assert_eq!(relayed.status(), StatusCode::UNAUTHORIZED);

    let server = TestServer::start_with(|c| {
        c.metrics_token = Some(pepeunit_backend::config::Secret::new("scrape-me-please"));
    })
    .await;
    let get = |token: Option<&'static str>| {
        let mut request = server.client.get(server.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(Some("wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(Some("scrape-me-please")).await.unwrap().status(),
        StatusCode::OK
    );
}
