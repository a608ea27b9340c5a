//! `env_example.json`: the settings a unit's firmware expects, with example values.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::schema::FormatError;

/// A parsed, valid `env_example.json`: a flat object of names to strings, numbers or booleans.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct EnvExample(Map<String, Value>);

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

impl EnvExample {
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, FormatError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::new(file, format!("is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(FormatError::new(file, "must be a JSON object"));
        };
        for (name, value) in &map {
            if !valid_name(name) {
                return Err(FormatError::new(
                    file,
                    format!(
                        "{name:?} is not a variable name (letters, digits and '_', at most 64)"
                    ),
                ));
            }
            if !(value.is_string() || value.is_number() || value.is_boolean()) {
                return Err(FormatError::new(
                    file,
                    format!("{name:?} must be a string, number or boolean, found {value}"),
                ));
            }
        }
        Ok(Self(map))
    }

    pub fn variables(&self) -> &Map<String, Value> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        let env = EnvExample::parse(
            "env_example.json",
            br#"{"WIFI_SSID": "ssid", "PU_MQTT_PORT": 1883, "DEBUG": true}"#,
        )
        .unwrap();
        assert_eq!(env.variables().len(), 3);
        for (text, want) in [
            (r#"{"A": {"b": 1}}"#, "must be a string, number or boolean"),
            (r#"{"1A": "x"}"#, "is not a variable name"),
            ("[1]", "must be a JSON object"),
            ("nope", "is not valid JSON"),
        ] {
            let err = EnvExample::parse("env_example.json", text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("env_example.json: ") && err.contains(want),
                "{text}: {err}"
            );
        }
    }
}
