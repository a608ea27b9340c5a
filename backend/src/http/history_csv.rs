//! `GET` and `POST /api/v1/unit_nodes/{uuid}/history.csv`: a variable's history as CSV, for spreadsheets
//! and scripts. Authenticated like GraphQL (`Authorization: Bearer`, a session or an API token; none for a
//! public variable's export). Export streams any size; import is all or nothing.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use crate::error::{Error, Result};
use crate::services::units::csv;

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
    let (actor, _) = state.bearer_caller(&headers).await?;
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
    let (actor, credential) = state.bearer_caller(&headers).await?;
    if credential.read_only() {
        return Err(Error::Forbidden(
            "this API token is read-only: it cannot import".into(),
        ));
    }
    let node = node(&uuid)?;
    let body = match state.read_body(body, "the file").await {
        Ok(body) => body,
        Err(too_large) => return Ok(too_large),
    };
    let imported = csv::import(&state.services, &actor, node, &body).await?;
    Ok(Json(json!({ "imported": imported })).into_response())
}
