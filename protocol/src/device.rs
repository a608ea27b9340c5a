//! What a unit holds and receives: its `env.json`, its `schema.json`, and the payloads of the standard
//! commands, parsed as the device side needs them.
//!
//! The server writes these files; the device agent and the fleet simulator read them. Parsing is lenient
//! about keys it does not know (firmware keeps its own settings in env.json) and strict about the ones a
//! device cannot work without.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::schema::FormatError;

/// The update command payload key the reference client reads.
pub const COMMIT_KEY: &str = "PU_COMMIT_VERSION";
/// The update command payload key with the SHA-256 (hex) of the unit's default `firmware/tgz` archive.
pub const FIRMWARE_SHA256_KEY: &str = "PU_FIRMWARE_SHA256";

/// A parsed `env.json`: the `PU_*` keys a device needs, typed, and everything else as the firmware's own.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitEnv {
    pub unit: Uuid,
    pub domain: String,
    pub http_type: String,
    pub app_prefix: String,
    pub api_prefix: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub mqtt_keepalive_seconds: u64,
    pub auth_token: String,
    pub state_send_interval_seconds: u64,
    pub min_log_level: String,
    pub max_log_length: usize,
    pub commit_version: Option<String>,
    /// Every key of the file, as written.
    pub raw: Map<String, Value>,
}

fn text(map: &Map<String, Value>, key: &str) -> Result<String, FormatError> {
    match map.get(key) {
        Some(Value::String(value)) => Ok(value.clone()),
        Some(Value::Number(value)) => Ok(value.to_string()),
        Some(other) => Err(FormatError::new(
            "env.json",
            format!("{key} must be a string, found {other}"),
        )),
        None => Err(FormatError::new("env.json", format!("{key} is missing"))),
    }
}

fn number(map: &Map<String, Value>, key: &str, default: u64) -> Result<u64, FormatError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(value)) => value
            .as_u64()
            .ok_or_else(|| FormatError::new("env.json", format!("{key} must be a whole number"))),
        // Hand-edited files sometimes quote numbers; the reference client accepts that too.
        Some(Value::String(value)) => value
            .trim()
            .parse()
            .map_err(|_| FormatError::new("env.json", format!("{key} must be a whole number"))),
        Some(other) => Err(FormatError::new(
            "env.json",
            format!("{key} must be a whole number, found {other}"),
        )),
    }
}

/// The unit uuid inside a unit token (`uuid` claim of the JWT payload), without checking the signature:
/// the device only needs to know who it is; the server checks the token.
pub fn token_unit(token: &str) -> Result<Uuid, FormatError> {
    let invalid = |why: &str| FormatError::new("env.json", format!("PU_AUTH_TOKEN {why}"));
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid("is not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| invalid("has a payload that is not base64"))?;
    #[derive(Deserialize)]
    struct Claims {
        uuid: Uuid,
    }
    let claims: Claims =
        serde_json::from_slice(&bytes).map_err(|_| invalid("carries no unit uuid"))?;
    Ok(claims.uuid)
}

impl UnitEnv {
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::new("env.json", format!("is not valid JSON: {e}")))?;
        let Value::Object(raw) = value else {
            return Err(FormatError::new("env.json", "must be a JSON object"));
        };
        let auth_token = text(&raw, "PU_AUTH_TOKEN")?;
        let port = number(&raw, "PU_MQTT_PORT", 1883)?;
        Ok(Self {
            unit: token_unit(&auth_token)?,
            domain: text(&raw, "PU_DOMAIN")?,
            http_type: text(&raw, "PU_HTTP_TYPE").unwrap_or_else(|_| "https".into()),
            app_prefix: text(&raw, "PU_APP_PREFIX").unwrap_or_default(),
            api_prefix: text(&raw, "PU_API_ACTUAL_PREFIX").unwrap_or_else(|_| "/api/v1".into()),
            mqtt_host: text(&raw, "PU_MQTT_HOST")?,
            mqtt_port: u16::try_from(port)
                .map_err(|_| FormatError::new("env.json", "PU_MQTT_PORT is not a port"))?,
            mqtt_keepalive_seconds: number(&raw, "PU_MQTT_KEEPALIVE", 60)?,
            auth_token,
            state_send_interval_seconds: number(&raw, "PU_STATE_SEND_INTERVAL", 300)?.max(1),
            min_log_level: text(&raw, "PU_MIN_LOG_LEVEL").unwrap_or_else(|_| "Debug".into()),
            max_log_length: usize::try_from(number(&raw, "PU_MAX_LOG_LENGTH", 64)?).unwrap_or(64),
            commit_version: text(&raw, COMMIT_KEY).ok(),
            raw,
        })
    }

    /// The REST base, e.g. `https://pepeunit.example/api/v1`.
    pub fn api_base(&self) -> String {
        format!(
            "{}://{}{}{}",
            self.http_type, self.domain, self.app_prefix, self.api_prefix
        )
    }
}

/// A unit's `schema.json`: for each section, a topic name (`<name>/pepeunit`) and its full topics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitSchema {
    #[serde(default)]
    pub input_base_topic: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub output_base_topic: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub input_topic: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub output_topic: BTreeMap<String, Vec<String>>,
}

impl UnitSchema {
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        serde_json::from_slice(bytes)
            .map_err(|e| FormatError::new("schema.json", format!("is not a unit schema: {e}")))
    }

    /// Every topic a unit subscribes to: its commands, its inputs and the outputs linked to them.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.input_base_topic
            .values()
            .chain(self.input_topic.values())
            .flatten()
            .map(String::as_str)
    }

    /// The command (`update/pepeunit`, ...) or input name (`<name>/pepeunit`) a message on `topic` is for.
    pub fn route(&self, topic: &str) -> Option<Route<'_>> {
        fn find<'s>(section: &'s BTreeMap<String, Vec<String>>, topic: &str) -> Option<&'s str> {
            section
                .iter()
                .find(|(_, topics)| topics.iter().any(|t| t == topic))
                .map(|(name, _)| name.as_str())
        }
        find(&self.input_base_topic, topic)
            .map(Route::Command)
            .or_else(|| find(&self.input_topic, topic).map(Route::Input))
    }
}

/// Where an incoming message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Command(&'a str),
    Input(&'a str),
}

/// The payload of `update/pepeunit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCommand {
    #[serde(rename = "COMMAND", default)]
    pub command: Option<String>,
    #[serde(rename = "PU_COMMIT_VERSION")]
    pub commit: String,
    /// Added by this server; the reference client ignores keys it does not know.
    #[serde(
        rename = "PU_FIRMWARE_SHA256",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub firmware_sha256: Option<String>,
}

impl UpdateCommand {
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        serde_json::from_slice(bytes).map_err(|e| {
            FormatError::new("update/pepeunit", format!("is not an update command: {e}"))
        })
    }
}

/// How a device reports that it refused or rolled back an update, inside its `state/pepeunit` payload
/// under [`UPDATE_FAILURE_KEY`]. The server marks the unit's update to `commit` failed with `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFailure {
    pub commit: String,
    pub reason: String,
}

/// The `state/pepeunit` key carrying an [`UpdateFailure`].
pub const UPDATE_FAILURE_KEY: &str = "pu_update_failure";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token(uuid: Uuid) -> String {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"uuid":"{uuid}","typ":"unit"}}"#));
        format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")
    }

    #[test]
    fn env_parses_server_output() {
        let uuid = Uuid::new_v4();
        let env = UnitEnv::parse(
            serde_json::json!({
                "PU_DOMAIN": "example.org", "PU_HTTP_TYPE": "http", "PU_APP_PREFIX": "",
                "PU_API_ACTUAL_PREFIX": "/api/v1", "PU_MQTT_HOST": "example.org", "PU_MQTT_PORT": 1883,
                "PU_AUTH_TOKEN": token(uuid), "PU_STATE_SEND_INTERVAL": "30", "WIFI_SSID": "x"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(env.unit, uuid);
        assert_eq!(env.api_base(), "http://example.org/api/v1");
        assert_eq!(env.state_send_interval_seconds, 30);
        assert_eq!(env.raw["WIFI_SSID"], "x");
    }

    #[test]
    fn env_errors_name_the_key() {
        let err = UnitEnv::parse(br#"{"PU_DOMAIN": "x"}"#).unwrap_err();
        assert!(
            err.to_string().contains("PU_AUTH_TOKEN is missing"),
            "{err}"
        );
        let err = UnitEnv::parse(
            format!(
                r#"{{"PU_DOMAIN":"x","PU_MQTT_HOST":"x","PU_MQTT_PORT":70000,"PU_AUTH_TOKEN":"{}"}}"#,
                token(Uuid::new_v4())
            )
            .as_bytes(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("PU_MQTT_PORT"), "{err}");
    }

    #[test]
    fn schema_routes_commands_and_inputs() {
        let schema = UnitSchema::parse(
            br#"{"input_base_topic": {"update/pepeunit": ["d/input_base_topic/u/update/pepeunit"]},
                 "input_topic": {"in/pepeunit": ["d/a/pepeunit", "d/linked/pepeunit"]},
                 "output_topic": {"out/pepeunit": ["d/b/pepeunit"]}}"#,
        )
        .unwrap();
        assert_eq!(
            schema.route("d/linked/pepeunit"),
            Some(Route::Input("in/pepeunit"))
        );
        assert_eq!(
            schema.route("d/input_base_topic/u/update/pepeunit"),
            Some(Route::Command("update/pepeunit"))
        );
        assert_eq!(schema.route("d/b/pepeunit"), None);
        assert_eq!(schema.subscriptions().count(), 3);
    }

    #[test]
    fn update_command_keeps_reference_fields() {
        let cmd =
            UpdateCommand::parse(br#"{"COMMAND":"Update","PU_COMMIT_VERSION":"abc"}"#).unwrap();
        assert_eq!(cmd.commit, "abc");
        assert_eq!(cmd.firmware_sha256, None);
        assert!(UpdateCommand::parse(b"{}").is_err());
    }

    proptest! {
        #[test]
        fn env_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = UnitEnv::parse(&bytes);
        }

        #[test]
        fn token_unit_round_trips(a in any::<u128>()) {
            let uuid = Uuid::from_u128(a);
            prop_assert_eq!(token_unit(&token(uuid)).unwrap(), uuid);
        }
    }
}
