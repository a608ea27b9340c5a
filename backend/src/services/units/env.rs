//! A unit's env.json: what the server generates, what the user fills in, and how it is kept.
//!
//! Stored sealed (AES-256-GCM under the instance master key) as [`StoredEnv`]: the unit's token and keys
//! and the values the user controls. The keys that describe this instance (domain, prefixes, MQTT host)
//! and the target commit are not stored but added when env.json is rendered, so a changed public URL or a
//! new target reaches every unit's next download. Numbers stay JSON numbers: the reference client compares
//! and passes them on without converting.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use chrono::Utc;
use pepeunit_protocol::env::EnvExample;
use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};

use crate::entities::units;
use crate::error::{Error, Result};
use crate::services::repo_units::invalid;
use crate::services::units::events::UnitEvent;
use crate::services::{Actor, Services, access};

/// Where the device REST API lives under the instance URL.
pub const API_PREFIX: &str = "/api/v1";

/// Keys only the server writes.
const GENERATED: [&str; 10] = [
    "PU_DOMAIN",
    "PU_HTTP_TYPE",
    "PU_APP_PREFIX",
    "PU_API_ACTUAL_PREFIX",
    "PU_MQTT_HOST",
    "PU_MQTT_PORT",
    "PU_AUTH_TOKEN",
    "PU_SECRET_KEY",
    "PU_ENCRYPT_KEY",
    "PU_COMMIT_VERSION",
];

/// Standard keys the user may tune, with the reference server's defaults.
fn tunable_defaults(state_send_interval: u64) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "PU_MQTT_PING_INTERVAL": 30,
        "PU_MQTT_KEEPALIVE": 60,
        "PU_STATE_SEND_INTERVAL": state_send_interval,
        "PU_MIN_LOG_LEVEL": "Debug",
        "PU_MAX_LOG_LENGTH": 64,
    }) else {
        return Map::new();
    };
    map
}

const LOG_LEVELS: [&str; 5] = ["Debug", "Info", "Warning", "Error", "Critical"];

/// Checks a value for a tunable standard key.
fn check_tunable(key: &str, value: &Value) -> Result<()> {
    let ok = match key {
        "PU_MIN_LOG_LEVEL" => value.as_str().is_some_and(|v| LOG_LEVELS.contains(&v)),
        _ => value
            .as_u64()
            .is_some_and(|v| (1..=86_400 * 7).contains(&v)),
    };
    if ok {
        Ok(())
    } else if key == "PU_MIN_LOG_LEVEL" {
        Err(invalid(
            "env",
            format!("{key} must be one of {}", LOG_LEVELS.join(", ")),
        ))
    } else {
        Err(invalid(
            "env",
            format!("{key} must be a whole number of at least 1"),
        ))
    }
}

/// The sealed part of env.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEnv {
    pub auth_token: String,
    pub secret_key: String,
    pub encrypt_key: String,
    /// Tunable standard keys and the repository's own keys, as the user set them.
    pub values: Map<String, Value>,
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl StoredEnv {
    /// A new unit's env: fresh token and keys, the example's values overridden by the user's.
    pub fn generate(
        services: &Services,
        unit: Uuid,
        token_version: i32,
        example: &EnvExample,
        user_values: &Map<String, Value>,
    ) -> Result<Self> {
        let mut values = tunable_defaults(services.units().state_send_interval_seconds);
        for (key, value) in example.variables() {
            if !GENERATED.contains(&key.as_str()) {
                values.insert(key.clone(), value.clone());
            }
        }
        let mut env = Self {
            auth_token: services.tokens().issue_unit(unit, token_version)?,
            secret_key: random_key(),
            encrypt_key: random_key(),
            values,
        };
        env.set_values(example, user_values)?;
        Ok(env)
    }

    /// Opens the sealed env of `unit`.
    pub fn open(services: &Services, unit: &units::Model) -> Result<Self> {
        let sealed = unit
            .env_encrypted
            .as_deref()
            .ok_or_else(|| Error::internal("unit without env"))?;
        let bytes = services
            .master_key()
            .decrypt(sealed)
            .map_err(Error::internal)?;
        serde_json::from_slice(&bytes).map_err(Error::internal)
    }

    pub fn seal(&self, services: &Services) -> Result<String> {
        let bytes = serde_json::to_vec(self).map_err(Error::internal)?;
        services
            .master_key()
            .encrypt(&bytes)
            .map_err(Error::internal)
    }

    /// Applies user edits: only the example's keys and the tunable standard ones, with valid values.
    pub fn set_values(&mut self, example: &EnvExample, edits: &Map<String, Value>) -> Result<()> {
        for (key, value) in edits {
            if GENERATED.contains(&key.as_str()) {
                return Err(invalid(
                    "env",
                    format!("{key} is generated by the server and cannot be set"),
                ));
            }
            if tunable_defaults(1).contains_key(key) {
                check_tunable(key, value)?;
            } else if !example.variables().contains_key(key) {
                return Err(invalid(
                    "env",
                    format!("{key} is not a key of this unit's env_example.json"),
                ));
            } else if !(value.is_string() || value.is_number() || value.is_boolean()) {
                return Err(invalid(
                    "env",
                    format!("{key} must be a string, number or boolean"),
                ));
            }
        }
        for (key, value) in edits {
            self.values.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    /// Keeps the user's values for keys the new example still has, adds its new keys with their example
    /// values, and drops the keys it no longer has.
    pub fn with_example(mut self, example: &EnvExample) -> Self {
        let tunable = tunable_defaults(1);
        self.values
            .retain(|key, _| tunable.contains_key(key) || example.variables().contains_key(key));
        for (key, value) in example.variables() {
            if !GENERATED.contains(&key.as_str()) && !self.values.contains_key(key) {
                self.values.insert(key.clone(), value.clone());
            }
        }
        self
    }

    /// The full env.json of `unit`.
    pub fn render(&self, services: &Services, unit: &units::Model) -> Map<String, Value> {
        let endpoint = &services.units().endpoint;
        let mut env = Map::new();
        env.insert("PU_DOMAIN".into(), json!(endpoint.domain));
        env.insert(
            "PU_HTTP_TYPE".into(),
            json!(if endpoint.https { "https" } else { "http" }),
        );
        env.insert("PU_APP_PREFIX".into(), json!(endpoint.app_prefix));
        env.insert("PU_API_ACTUAL_PREFIX".into(), json!(API_PREFIX));
        env.insert("PU_MQTT_HOST".into(), json!(endpoint.mqtt_host));
        env.insert("PU_MQTT_PORT".into(), json!(endpoint.mqtt_port));
        env.insert("PU_AUTH_TOKEN".into(), json!(self.auth_token));
        env.insert("PU_SECRET_KEY".into(), json!(self.secret_key));
        env.insert("PU_ENCRYPT_KEY".into(), json!(self.encrypt_key));
        env.extend(tunable_defaults(
            services.units().state_send_interval_seconds,
        ));
        for (key, value) in &self.values {
            env.insert(key.clone(), value.clone());
        }
        env.insert(
            "PU_COMMIT_VERSION".into(),
            json!(unit.target_commit.clone().unwrap_or_default()),
        );
        env
    }
}

/// Loads a unit for its creator only: env.json is the device's secret, not even admins read it.
pub(crate) async fn creators_unit(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
) -> Result<units::Model> {
    let user = actor.require_user()?;
    let unit = access::find_visible::<units::Entity>(services.db(), actor, uuid, "unit").await?;
    if unit.creator_uuid == user.id.as_uuid() {
        Ok(unit)
    } else {
        Err(Error::Forbidden(
            "only the unit's creator reads its env.json".into(),
        ))
    }
}

/// The unit's env.json, for its creator.
pub async fn read(services: &Services, actor: &Actor, uuid: Uuid) -> Result<Map<String, Value>> {
    let unit = creators_unit(services, actor, uuid).await?;
    Ok(StoredEnv::open(services, &unit)?.render(services, &unit))
}

/// Sets some of the unit's env values; the creator only. Returns the new env.json.
pub async fn edit(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    edits: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    let unit = creators_unit(services, actor, uuid).await?;
    let (example, _) = super::target_examples(services, &unit).await?;
    let mut stored = StoredEnv::open(services, &unit)?;
    stored.set_values(&example, edits)?;
    let mut active = unit.into_active_model();
    active.env_encrypted = Set(Some(stored.seal(services)?));
    active.updated_at = Set(Utc::now());
    let unit = active.update(services.db()).await?;
    services
        .unit_events()
        .send(UnitEvent::EnvChanged(unit.uuid));
    Ok(stored.render(services, &unit))
}

/// Issues the unit a new token (the old one stops working at once) and new keys. Returns the new env.json,
/// which must reach the device by a new bundle.
pub async fn regenerate(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
) -> Result<Map<String, Value>> {
    let unit = creators_unit(services, actor, uuid).await?;
    let mut stored = StoredEnv::open(services, &unit)?;
    let version = unit.token_version + 1;
    stored.auth_token = services.tokens().issue_unit(unit.uuid, version)?;
    stored.secret_key = random_key();
    stored.encrypt_key = random_key();
    let mut active = unit.into_active_model();
    active.token_version = Set(version);
    active.env_encrypted = Set(Some(stored.seal(services)?));
    active.updated_at = Set(Utc::now());
    let unit = active.update(services.db()).await?;
    services.unit_events().send(UnitEvent::Revoked(unit.uuid));
    Ok(stored.render(services, &unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> EnvExample {
        EnvExample::parse(
            "env_example.json",
            br#"{"WIFI_SSID": "ssid", "PERIOD": 5, "PU_AUTH_TOKEN": "x"}"#,
        )
        .unwrap()
    }

    fn stored() -> StoredEnv {
        StoredEnv {
            auth_token: "t".into(),
            secret_key: "s".into(),
            encrypt_key: "e".into(),
            values: Map::new(),
        }
        .with_example(&example())
    }

    fn edit(pairs: Value) -> Map<String, Value> {
        pairs.as_object().unwrap().clone()
    }

    #[test]
    fn example_keys_come_in_without_generated_ones() {
        let env = stored();
        assert_eq!(env.values["WIFI_SSID"], "ssid");
        assert!(!env.values.contains_key("PU_AUTH_TOKEN"));
    }

    #[test]
    fn edits_are_checked_and_nothing_applies_on_error() {
        let mut env = stored();
        env.set_values(
            &example(),
            &edit(json!({"WIFI_SSID": "home", "PU_MIN_LOG_LEVEL": "Info"})),
        )
        .unwrap();
        assert_eq!(env.values["WIFI_SSID"], "home");
        for bad in [
            json!({"WIFI_SSID": "x", "PU_SECRET_KEY": "mine"}),
            json!({"UNKNOWN": 1}),
            json!({"WIFI_SSID": {"nested": 1}}),
            json!({"PU_STATE_SEND_INTERVAL": "60"}),
            json!({"PU_STATE_SEND_INTERVAL": 0}),
            json!({"PU_MIN_LOG_LEVEL": "Loud"}),
        ] {
            let before = env.values.clone();
            assert!(
                env.set_values(&example(), &edit(bad.clone())).is_err(),
                "{bad}"
            );
            assert_eq!(env.values, before);
        }
    }

    #[test]
    fn a_new_example_keeps_values_adds_and_drops_keys() {
        let mut env = stored();
        env.set_values(&example(), &edit(json!({"WIFI_SSID": "home"})))
            .unwrap();
        let next = EnvExample::parse("env_example.json", br#"{"WIFI_SSID": "ssid", "NEW": true}"#)
            .unwrap();
        let env = env.with_example(&next);
        assert_eq!(env.values["WIFI_SSID"], "home");
        assert_eq!(env.values["NEW"], true);
        assert!(!env.values.contains_key("PERIOD"));
    }
}
