//! `GET` and `POST /api/v1/unit_nodes/{uuid}/history.csv`: a variable's history as CSV, for spreadsheets
//! and scripts. Authenticated like GraphQL (`Authorization: Bearer`, a session or an API token; none for a
//! public variable's export). Export streams any size; import is all or nothing.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use crate::error::{Error, Result, json_error};
use crate::services::Actor;
use crate::services::api_tokens::{self, Credential};
use crate::services::units::csv;

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<(Actor, Credential)> {
    match super::bearer(headers) {
        None => Ok((Actor::Anonymous, Credential::Session)),
        Some(token) => api_tokens::authenticate_bearer(&state.services, token).await,
    }
}

fn node(raw: &str) -> Result<Uuid> {
    raw.parse().map_err(|_| Error::NotFound("unit_node"))
}

#[derive(Deserialize)]
pub struct Range {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

pub async fn export(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    Query(range): Query<Range>,
    headers: HeaderMap,
) -> Result<Response> {
    let (actor, _) = caller(&state, &headers).await?;
    let node = node(&uuid)?;
    let rows = csv::export(&state.services, &actor, node, range.from, range.to).await?;
    let body = Body::from_stream(rows.map_err(|error| {
        // The status is sent already: the cause is logged and the download ends short.
        tracing::warn!(%error, "a CSV export failed half-way");
        std::io::Error::other("export failed")
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{node}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

pub async fn import(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let (actor, credential) = caller(&state, &headers).await?;
    if credential.read_only() {
        return Err(Error::Forbidden(
            "this API token is read-only: it cannot import".into(),
        ));
    }
    let node = node(&uuid)?;
    let Ok(body) = to_bytes(body, state.max_body_bytes).await else {
        return Ok(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!(
                "the file is larger than {} bytes (max_body_bytes): split it",
                state.max_body_bytes
            ),
        ));
    };
    let imported = csv::import(&state.services, &actor, node, &body).await?;
    Ok(Json(json!({ "imported": imported })).into_response())
}
