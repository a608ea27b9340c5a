//! `POST /api/v1/repo_units/{uuid}/webhook`: push notifications from GitHub or GitLab trigger a sync.
//!
//! GitHub signs the body (`X-Hub-Signature-256`), GitLab sends the shared secret (`X-Gitlab-Token`);
//! anything else, or a wrong proof, gets 401 and starts nothing.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::error::{Error, json_error};
use crate::services::repo_units::{self, WebhookProof};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn receive(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(uuid) = uuid.parse::<uuid::Uuid>() else {
        return Error::NotFound("repo_unit").into_response();
    };
    let Ok(body) = to_bytes(body, state.max_body_bytes).await else {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "webhook body too large",
        );
    };
    let (proof, is_push) = if let Some(signature) = header(&headers, "x-hub-signature-256") {
        let event = header(&headers, "x-github-event").unwrap_or_default();
        (WebhookProof::GithubSignature(signature), event == "push")
    } else if let Some(token) = header(&headers, "x-gitlab-token") {
        let event = header(&headers, "x-gitlab-event").unwrap_or_default();
        (
            WebhookProof::GitlabToken(token),
            matches!(event, "Push Hook" | "Tag Push Hook"),
        )
    } else {
        (WebhookProof::None, false)
    };
    match repo_units::webhook(&state.services, uuid, proof, is_push, &body).await {
        Ok(true) => (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "sync started" })),
        )
            .into_response(),
        Ok(false) => Json(json!({ "status": "ignored: not a push event" })).into_response(),
        Err(error) => error.into_response(),
    }
}
