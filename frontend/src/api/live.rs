//! Live data over `/graphql/ws` (`graphql-transport-ws`): new values, presence and state of the units on
//! the canvas. Events go into a channel the app drains inside its own runtime.

use futures_channel::mpsc::UnboundedSender;
use serde_json::{Value, json};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{MessageEvent, WebSocket};

use super::queries::LIVE;

/// Something that changed on the server.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    Value {
        node: String,
        value: String,
        at: String,
    },
    Presence {
        unit: String,
        online: bool,
    },
    State {
        unit: String,
    },
}

impl LiveEvent {
    fn parse(message: &Value) -> Option<Self> {
        let data = &message["payload"]["data"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        if let Some(event) = data.get("unitNodeValues") {
            return Some(LiveEvent::Value {
                node: text(&event["nodeUuid"])?,
                value: text(&event["value"])?,
                at: text(&event["at"]).unwrap_or_default(),
            });
        }
        if let Some(event) = data.get("unitPresence") {
            return Some(LiveEvent::Presence {
                unit: text(&event["unitUuid"])?,
                online: event["online"].as_bool()?,
            });
        }
        let event = data.get("unitStates")?;
        Some(LiveEvent::State {
            unit: text(&event["unitUuid"])?,
        })
    }
}

/// An open subscription socket; dropping it closes the socket.
pub struct LiveSocket {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Drop for LiveSocket {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        let _ = self.socket.close();
    }
}

fn socket_url() -> Option<String> {
    let location = web_sys::window()?.location();
    let scheme = if location.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    Some(format!("{scheme}://{}/graphql/ws", location.host().ok()?))
}

/// Subscribes to the live data of `units`, sending each event to `events`.
pub fn connect(
    token: &str,
    units: &[String],
    events: UnboundedSender<LiveEvent>,
) -> Option<LiveSocket> {
    if units.is_empty() {
        return None;
    }
    let socket = WebSocket::new_with_str(&socket_url()?, "graphql-transport-ws").ok()?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    let opened = socket.clone();
    let on_open = Closure::<dyn FnMut()>::new(move || {
        let _ = opened.send_with_str(&init.to_string());
    });
    let subscriptions: Vec<String> = LIVE
        .iter()
        .map(|(id, query)| {
            json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": { "u": units } } })
                .to_string()
        })
        .collect();
    let replies = socket.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(text) = event.data().as_string() else {
            return;
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        match message["type"].as_str() {
            Some("connection_ack") => {
                for subscription in &subscriptions {
                    let _ = replies.send_with_str(subscription);
                }
            }
            Some("ping") => {
                let _ = replies.send_with_str(r#"{"type":"pong"}"#);
            }
            Some("next") => {
                if let Some(event) = LiveEvent::parse(&message) {
                    let _ = events.unbounded_send(event);
                }
            }
            _ => {}
        }
    });
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    Some(LiveSocket {
        socket,
        _on_open: on_open,
        _on_message: on_message,
    })
}
