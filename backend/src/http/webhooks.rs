//! `POST /api/v1/repo_units/{uuid}/webhook`: push notifications from GitHub or GitLab trigger a sync.
//!
//! GitHub signs the body (`X-Hub-Signature-256`), GitLab sends the shared secret (`X-Gitlab-Token`);
//! anything else, or a wrong proof, gets 401 and starts nothing. A delivery id seen before
//! (`X-GitHub-Delivery`, `X-Gitea-Delivery`, `X-Gitlab-Event-UUID`) is a replay and starts nothing; a repo
//! syncs at most once per `WEBHOOK_SYNC_INTERVAL`, later deliveries folding into the scheduled sync.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::error::{Error, json_error};
use crate::services::repo_sync::WebhookSync;
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
    // The forge's id of this delivery: a replay of a signed delivery carries the same one.
    let delivery = [
        "x-github-delivery",
        "x-gitea-delivery",
        "x-gitlab-event-uuid",
    ]
    .into_iter()
    .find_map(|name| header(&headers, name));
    match repo_units::webhook(&state.services, uuid, proof, is_push, delivery, &body).await {
        Ok(Some(WebhookSync::Scheduled)) => (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "sync started" })),
        )
            .into_response(),
        Ok(Some(WebhookSync::Folded)) => (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "sync already scheduled" })),
        )
            .into_response(),
        Ok(Some(WebhookSync::Replayed)) => {
            Json(json!({ "status": "ignored: delivery already received" })).into_response()
        }
        Ok(None) => Json(json!({ "status": "ignored: not a push event" })).into_response(),
        Err(error) => error.into_response(),
    }
}
