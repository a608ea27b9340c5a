//! The HTTP edge: routes, request limits, client addresses and metrics.

mod device;
mod frontend;
mod graphql;
mod graphql_ws;
mod health;
mod history_csv;
pub mod metrics;
mod mqtt_ws;
mod series;
pub mod server;
mod telegram;
pub mod values;
mod webhooks;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::graphql::PepeunitSchema;
use crate::services::Services;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub broker: crate::broker::Broker,
    pub schema: PepeunitSchema,
    pub metrics: Arc<metrics::Metrics>,
    pub max_body_bytes: usize,
    pub trust_forwarded_for: bool,
    /// The built web app, served at `/`.
    pub frontend_dir: Arc<std::path::PathBuf>,
    /// Opens `/metrics` to clients that present it; without it only direct loopback clients may read it.
    pub metrics_token: Option<Arc<crate::config::Secret>>,
    /// Per-unit limits of values posted over REST.
    pub values: Arc<values::ValueLimits>,
    /// The Telegram bot, which takes updates at its webhook in webhook mode.
    pub telegram: Option<Arc<crate::telegram::Telegram>>,
}

impl AppState {
    /// The client's address: the peer, or the proxy-appended X-Forwarded-For entry when configured to trust it.
    fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.trust_forwarded_for {
            let forwarded = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok());
            if let Some(ip) = forwarded {
                return ip;
            }
        }
        peer.ip()
    }
}

impl AppState {
    /// Who sends a request with `Authorization: Bearer` (a session or an API token); anonymous without it.
    async fn bearer_caller(
        &self,
        headers: &HeaderMap,
    ) -> crate::error::Result<(
        crate::services::Actor,
        crate::services::api_tokens::Credential,
    )> {
        match bearer(headers) {
            None => Ok((
                crate::services::Actor::Anonymous,
                crate::services::api_tokens::Credential::Session,
            )),
            Some(token) => {
                crate::services::api_tokens::authenticate_bearer(&self.services, token).await
            }
        }
    }

    /// The request body, at most `max_body_bytes`; past it, a 413 saying so of `what` ("the body").
    async fn read_body(
        &self,
        body: axum::body::Body,
        what: &str,
    ) -> Result<axum::body::Bytes, axum::response::Response> {
        axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|_| {
                crate::error::json_error(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    &format!(
                        "{what} is larger than {} bytes (max_body_bytes)",
                        self.max_body_bytes
                    ),
                )
            })
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_value(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The token of the request's `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_value(
        headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?,
    )
}

/// All routes of the server.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::render))
        .route("/graphql", get(graphql::graphiql).post(graphql::execute))
        .route("/graphql/ws", get(graphql_ws::subscribe))
        .route("/graphql/assets/{file}", get(graphql::graphiql_asset))
        .route("/mqtt", get(mqtt_ws::upgrade))
        .route("/api/v1/repo_units/{uuid}/webhook", post(webhooks::receive))
        .route("/api/v1/units/env/{uuid}", get(device::env))
        .route(
            "/api/v1/units/get_current_schema/{uuid}",
            get(device::schema),
        )
        .route(
            "/api/v1/units/firmware/{kind}/{uuid}",
            get(device::firmware),
        )
        .route(
            "/api/v1/units/set_state_storage/{uuid}",
            post(device::set_state_storage),
        )
        .route(
            "/api/v1/units/get_state_storage/{uuid}",
            get(device::get_state_storage),
        )
        .route("/api/v1/unit_nodes", get(device::unit_nodes))
        .route(
            "/api/v1/unit_nodes/{uuid}/history.csv",
            get(history_csv::export).post(history_csv::import),
        )
        .route("/api/v1/unit_nodes/{uuid}/series", get(series::get))
        .route("/api/v1/world_state", get(device::world_state))
        .route("/api/v1/units", get(device::units))
        .route("/api/v1/units/{uuid}/values", post(values::post))
        .route(crate::telegram::WEBHOOK_PATH, post(telegram::receive))
        .merge(state.services.federation().router())
        .route("/", get(frontend::index))
        .route("/verify", get(mail_link_page))
        .route("/reset", get(mail_link_page))
        .fallback(frontend::file_or_not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// The page a mailed link opens (`/verify?token=`, `/reset?token=`): it reads the token and calls
/// `verifyEmail`, or asks for the new password and calls `resetPassword` (see `services::mail`).
async fn mail_link_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../assets/mail/link.html"))
}

/// The Content-Security-Policy of every response, unless a handler set its own. The web app is a wasm
/// module with its JS glue, all same-origin (`'wasm-unsafe-eval'` lets it compile; it never evaluates
/// strings); inline scripts of HTML pages are allowed by their hash only ([`with_script_hashes`]); styles
/// may be inline (the app sets them on elements).
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Largest HTML page whose inline scripts are hashed into its policy.
const MAX_HASHED_PAGE: usize = 4 * 1024 * 1024;

/// The policy for an HTML page: [`CSP`] with the SHA-256 of each of its inline `<script>` blocks.
fn with_script_hashes(html: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut hashes = String::new();
    let mut rest = html;
    while let Some(open) = rest.find("<script") {
        let after = &rest[open..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let body = &after[tag_end + 1..];
        let Some(close) = body.find("</script") else {
            break;
        };
        if !tag.contains(" src=") && !tag.contains(" src =") {
            let digest = Sha256::digest(&body.as_bytes()[..close]);
            let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
            hashes.push_str(&format!(" 'sha256-{encoded}'"));
        }
        rest = &body[close..];
    }
    CSP.replacen(
        "'wasm-unsafe-eval'",
        &format!("'wasm-unsafe-eval'{hashes}"),
        1,
    )
}

/// Security headers on every response: no MIME sniffing, no framing, no referrer leaks, and a
/// Content-Security-Policy (with the page's own inline scripts allowed by hash on HTML pages).
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let mut response = if is_html
        && !response
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
    {
        let (mut parts, body) = response.into_parts();
        match axum::body::to_bytes(body, MAX_HASHED_PAGE).await {
            Ok(bytes) => {
                let policy = with_script_hashes(&String::from_utf8_lossy(&bytes));
                if let Ok(value) = HeaderValue::from_str(&policy) {
                    parts.headers.insert(header::CONTENT_SECURITY_POLICY, value);
                }
                axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
            }
            Err(_) => {
                return crate::error::Error::internal("HTML page too large to hash")
                    .into_response();
            }
        }
    } else {
        response
    };
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub(crate) fn not_found() -> axum::response::Response {
    crate::error::json_error(
        axum::http::StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_allowed_by_hash_and_external_ones_are_not_hashed() {
        let page = "<html><script type=\"module\">init();</script><script src=\"/app.js\"></script></html>";
        let policy = with_script_hashes(page);
        // printf 'init();' | openssl dgst -sha256 -binary | base64
        assert!(policy.contains("'wasm-unsafe-eval' 'sha256-"), "{policy}");
        assert_eq!(policy.matches("'sha256-").count(), 1, "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"));
    }
}
