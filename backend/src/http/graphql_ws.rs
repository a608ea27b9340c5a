//! `GET /graphql/ws`: GraphQL subscriptions over WebSocket (`graphql-transport-ws`, and the older
//! `graphql-ws`). The caller authenticates in `connection_init` with `{"Authorization": "Bearer <token>"}`
//! (browsers cannot set headers on a WebSocket), or with the upgrade request's `Authorization` header.

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;

use super::AppState;
use crate::services::api_tokens::{self, Credential};
use crate::services::{Actor, Services};

async fn actor(
    services: &Services,
    token: Option<&str>,
) -> async_graphql::Result<(Actor, Credential)> {
    match token {
        None => Ok((Actor::Anonymous, Credential::Session)),
        Some(token) => api_tokens::authenticate_bearer(services, token)
            .await
            .map_err(|e| async_graphql::Error::new(e.public_message())),
    }
}

pub async fn subscribe(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_token = super::bearer(&headers).map(str::to_owned);
    let schema = state.schema.clone();
    let services = state.services.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload: serde_json::Value| async move {
                    let token = payload
                        .get("Authorization")
                        .or_else(|| payload.get("authorization"))
                        .and_then(|v| v.as_str())
                        .and_then(super::bearer_value)
                        .map(str::to_owned)
                        .or(header_token);
                    let mut data = Data::default();
                    let (actor, credential) = actor(&services, token.as_deref()).await?;
                    data.insert(actor);
                    data.insert(credential);
                    Ok(data)
                })
                .serve()
        })
}
