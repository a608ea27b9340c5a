//! The HTTP edge: routes, request limits, client addresses and metrics.

mod device;
mod frontend;
mod graphql;
mod graphql_ws;
mod health;
pub mod metrics;
mod mqtt_ws;
pub mod server;
mod webhooks;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
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
        .route("/api/v1/world_state", get(device::world_state))
        .route("/api/v1/units", get(device::units))
        .route("/", get(frontend::index))
        .fallback(frontend::file_or_not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

pub(crate) fn not_found() -> axum::response::Response {
    crate::error::json_error(
        axum::http::StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route",
    )
}
