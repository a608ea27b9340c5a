//! Where units reach the embedded MQTT broker, and the banner that says so when the default port was
//! taken at start-up and the server fell back to another one (a Mosquitto on 1883, typically).

use dioxus::prelude::*;
use serde::Deserialize;

use crate::api::{Session, gql, queries};

/// Remembers the dismissed fallback, so the same one does not come back on every reload; a new fallback
/// (another port) shows again.
const DISMISSED_KEY: &str = "pepeunit.mqtt-port-notice";

/// The `mqttBroker` query's answer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MqttBroker {
    pub host: String,
    pub port: u16,
    /// The default port another program held, when the broker fell back to `port`.
    pub default_port_taken: Option<u16>,
}

impl MqttBroker {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn fallback_key(&self) -> Option<String> {
        self.default_port_taken
            .map(|taken| format!("{taken}->{}", self.port))
    }
}

/// Asks the server (the query is public, so this works logged out too).
pub async fn load() -> Option<MqttBroker> {
    let data = gql(queries::MQTT_BROKER, serde_json::json!({}))
        .await
        .ok()?;
    serde_json::from_value(data["mqttBroker"].clone()).ok()
}

/// A banner under the toolbar while the broker runs on a fallback port, until the user dismisses it.
#[component]
pub fn PortNotice() -> Element {
    let broker = use_resource(load);
    let mut dismissed = use_signal(|| Session::load(DISMISSED_KEY));
    let Some(Some(broker)) = broker.read().clone() else {
        return rsx! {};
    };
    let (Some(taken), Some(key)) = (broker.default_port_taken, broker.fallback_key()) else {
        return rsx! {};
    };
    if dismissed.read().as_deref() == Some(key.as_str()) {
        return rsx! {};
    }
    rsx! {
        div { id: "mqtt-port-notice", class: "banner", role: "status",
            span {
                "MQTT broker on {broker.address()}: port {taken} was taken by another program. "
                "Units get the right port in env.json; set PEPEUNIT_MQTT_BIND to choose one."
            }
            button {
                "aria-label": "Dismiss the MQTT port notice",
                onclick: move |_| {
                    Session::save(DISMISSED_KEY, &key);
                    dismissed.set(Some(key.clone()));
                },
                "×"
            }
        }
    }
}
