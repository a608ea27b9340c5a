//! `GET /mqtt`: MQTT over WebSocket, served by the embedded broker.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::Response;

use super::AppState;
use crate::broker::websocket;

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let broker = state.broker.clone();
    upgrade
        .protocols(["mqtt"])
        .max_message_size(crate::broker::MAX_PACKET + 8)
        .on_upgrade(move |socket| websocket::serve(broker, socket, peer))
}
