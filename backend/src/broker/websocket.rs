//! MQTT over WebSocket (`GET /mqtt` on the HTTP server, subprotocol `mqtt`), for browsers and networks
//! that only pass HTTP. Binary frames carry the MQTT byte stream; the session is the same as over TCP.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Broker;

/// Bridges `socket` to a broker session.
pub async fn serve(broker: Broker, socket: WebSocket, peer: SocketAddr) {
    let (session_side, bridge_side) = tokio::io::duplex(64 * 1024);
    let (mut from_session, mut to_session) = tokio::io::split(bridge_side);
    let (mut ws_tx, mut ws_rx) = socket.split();
    let inbound = async move {
        while let Some(Ok(message)) = ws_rx.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            if to_session.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match from_session.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(buffer[..n].to_vec().into());
                    if ws_tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    let session = broker.serve_stream(session_side, peer);
    tokio::join!(inbound, outbound, session);
}
