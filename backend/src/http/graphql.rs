//! `POST /graphql` (the API) and `GET /graphql` (GraphiQL, with its files under `/graphql/assets/`).
//!
//! GraphiQL comes entirely from this server, pinned versions embedded in the binary
//! (`backend/assets/graphiql/`), so it works without internet.
//!
//! The body is read here rather than by an extractor so that every refusal (oversized, malformed JSON,
//! batched operations, bad token) answers with a GraphQL-shaped JSON body and a code. Batches are refused:
//! one HTTP request would otherwise carry many operations past the per-operation depth, complexity and
//! login-throttle limits.

use std::net::SocketAddr;

use async_graphql::{ServerError, Value};
use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::graphql::RequestInfo;

pub async fn graphiql() -> Html<&'static str> {
    Html(include_str!("../../assets/graphiql/index.html"))
}

/// GraphiQL's files: name, content type, whether the name carries the version (then cached for a year).
const ASSETS: [(&str, &str, bool, &[u8]); 6] = [
    (
        "graphiql-3.8.3.min.js",
        "text/javascript; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/graphiql-3.8.3.min.js"),
    ),
    (
        "graphiql-3.8.3.min.css",
        "text/css; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/graphiql-3.8.3.min.css"),
    ),
    (
        "react-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/react-18.3.1.production.min.js"),
    ),
    (
        "react-dom-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/react-dom-18.3.1.production.min.js"),
    ),
    (
        "pepeunit-graphiql.js",
        "text/javascript; charset=utf-8",
        false,
        include_bytes!("../../assets/graphiql/pepeunit-graphiql.js"),
    ),
    (
        "pepeunit-graphiql.css",
        "text/css; charset=utf-8",
        false,
        include_bytes!("../../assets/graphiql/pepeunit-graphiql.css"),
    ),
];

/// `GET /graphql/assets/{file}`: one of GraphiQL's files.
pub async fn graphiql_asset(Path(file): Path<String>) -> Response {
    let Some((_, content_type, versioned, body)) =
        ASSETS.iter().find(|(name, ..)| *name == file.as_str())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Ours change with the server, without a new name: the browser asks again each time.
    let cache = if *versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        *body,
    )
        .into_response()
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
}

/// Errors raised by the engine itself (parse, validation, limits) carry no code yet; give them one.
fn code_engine_error(error: &mut ServerError) {
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|e| e.get("code").is_some());
    if has_code {
        return;
    }
    let code = if error.message.contains("too deep") || error.message.contains("too complex") {
        "QUERY_TOO_COMPLEX"
    } else {
        "GRAPHQL_VALIDATION_FAILED"
    };
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", Value::from(code));
}

pub async fn execute(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let declared_len = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("request body is larger than {} bytes", state.max_body_bytes),
        )
    };
    if declared_len.is_some_and(|len| len > state.max_body_bytes) {
        return too_large();
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/graphql-response+json")
        });
    if !is_json {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_REQUEST",
            "send the operation as JSON with Content-Type: application/json",
        );
    }
    let Ok(bytes) = to_bytes(body, state.max_body_bytes).await else {
        return too_large();
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return refusal(
            StatusCode::BAD_REQUEST,
            "BATCH_NOT_ALLOWED",
            "batched operations are not accepted; send one operation per request",
        );
    }
    let request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("the body is not a GraphQL request: {error}"),
            );
        }
    };
    let (actor, credential) = match state.bearer_caller(&headers).await {
        Ok(authenticated) => authenticated,
        Err(error) => return refusal(error.status(), error.code(), &error.public_message()),
    };
    let client_ip = state.client_ip(peer, &headers);
    let request = request
        .data(actor)
        .data(credential)
        .data(RequestInfo { client_ip });
    let mut response = state.schema.execute(request).await;
    response.errors.iter_mut().for_each(code_engine_error);

    let retry_after = response.errors.iter().find_map(|e| {
        let ext = e.extensions.as_ref()?;
        match (ext.get("code"), ext.get("retryAfterSeconds")) {
            (Some(Value::String(code)), Some(Value::Number(secs))) if code == "RATE_LIMITED" => {
                secs.as_u64()
            }
            _ => None,
        }
    });
    let mut http = Json(response).into_response();
    if let Some(seconds) = retry_after {
        *http.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            http.headers_mut().insert(RETRY_AFTER, value);
        }
    }
    http
}
