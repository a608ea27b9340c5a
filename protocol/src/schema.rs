//! `schema_example.json`: the topics a unit's firmware declares, as a repository ships it.
//!
//! Four sections, each a list of topic names: the standard command topics the unit handles
//! (`input_base_topic`), the standard topics it publishes (`output_base_topic`), and the developer's own
//! inputs and outputs, from which the server creates the unit's variable nodes.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Standard commands the server sends a unit.
pub const INPUT_BASE_TOPICS: [&str; 5] = [
    "update/pepeunit",
    "env_update/pepeunit",
    "schema_update/pepeunit",
    "log_sync/pepeunit",
    "reset/pepeunit",
];

/// Standard topics a unit publishes.
pub const OUTPUT_BASE_TOPICS: [&str; 2] = ["state/pepeunit", "log/pepeunit"];

/// A file of a firmware repository does not follow its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FormatError {
    pub file: String,
    pub message: String,
}

impl FormatError {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            message: message.into(),
        }
    }
}

/// A developer topic name such as `current_temp/pepeunit`: 1–100 characters of ASCII letters, digits,
/// `_`, `-`, `.` and `/`, no empty segments, and none of MQTT's wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 100 {
            return Err(format!("topic {raw:?} must be 1 to 100 characters long"));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        {
            return Err(format!(
                "topic {raw:?} may hold only letters, digits, '_', '-', '.' and '/'"
            ));
        }
        if raw.split('/').any(str::is_empty) {
            return Err(format!("topic {raw:?} has an empty segment"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TopicName> for String {
    fn from(value: TopicName) -> Self {
        value.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed, valid `schema_example.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaExample {
    pub input_base_topic: Vec<String>,
    pub output_base_topic: Vec<String>,
    pub input_topic: Vec<TopicName>,
    pub output_topic: Vec<TopicName>,
}

fn string_list(
    file: &str,
    object: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Vec<String>, FormatError> {
    match object.get(key) {
        None => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    FormatError::new(file, format!("\"{key}\" must list strings, found {item}"))
                })
            })
            .collect(),
        Some(other) => Err(FormatError::new(
            file,
            format!("\"{key}\" must be a list, found {other}"),
        )),
    }
}

fn no_duplicates<'a>(
    file: &str,
    key: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), FormatError> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(FormatError::new(
                file,
                format!("\"{key}\" lists {name:?} twice"),
            ));
        }
    }
    Ok(())
}

impl SchemaExample {
    /// Parses and checks the file's bytes; `file` names it in errors.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, FormatError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::new(file, format!("is not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| FormatError::new(file, "must be a JSON object"))?;
        const KEYS: [&str; 4] = [
            "input_base_topic",
            "output_base_topic",
            "input_topic",
            "output_topic",
        ];
        if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(FormatError::new(
                file,
                format!("unknown section {unknown:?}; expected {}", KEYS.join(", ")),
            ));
        }
        let input_base_topic = string_list(file, object, "input_base_topic")?;
        let output_base_topic = string_list(file, object, "output_base_topic")?;
        for (key, list, allowed) in [
            (
                "input_base_topic",
                &input_base_topic,
                &INPUT_BASE_TOPICS[..],
            ),
            (
                "output_base_topic",
                &output_base_topic,
                &OUTPUT_BASE_TOPICS[..],
            ),
        ] {
            if let Some(bad) = list.iter().find(|t| !allowed.contains(&t.as_str())) {
                return Err(FormatError::new(
                    file,
                    format!(
                        "\"{key}\" has unknown standard topic {bad:?}; expected any of {}",
                        allowed.join(", ")
                    ),
                ));
            }
            no_duplicates(file, key, list.iter().map(String::as_str))?;
        }
        let topics = |key: &str| -> Result<Vec<TopicName>, FormatError> {
            let names = string_list(file, object, key)?
                .iter()
                .map(|raw| {
                    TopicName::parse(raw)
                        .map_err(|m| FormatError::new(file, format!("\"{key}\": {m}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            no_duplicates(file, key, names.iter().map(TopicName::as_str))?;
            Ok(names)
        };
        let input_topic = topics("input_topic")?;
        let output_topic = topics("output_topic")?;
        Ok(Self {
            input_base_topic,
            output_base_topic,
            input_topic,
            output_topic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"{
        "input_base_topic": ["update/pepeunit", "env_update/pepeunit", "schema_update/pepeunit", "log_sync/pepeunit"],
        "output_base_topic": ["state/pepeunit", "log/pepeunit"],
        "input_topic": ["set_fan_state/pepeunit"],
        "output_topic": ["current_fan_speed_percentage/pepeunit", "current_temp/pepeunit"]
    }"#;

    #[test]
    fn the_documented_example_parses() {
        let schema = SchemaExample::parse("schema_example.json", EXAMPLE.as_bytes()).unwrap();
        assert_eq!(schema.input_topic[0].as_str(), "set_fan_state/pepeunit");
        assert_eq!(schema.output_topic.len(), 2);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let cases = [
            ("[]", "must be a JSON object"),
            ("{", "is not valid JSON"),
            (r#"{"inputs": []}"#, "unknown section \"inputs\""),
            (r#"{"input_topic": "x"}"#, "must be a list"),
            (r#"{"input_topic": [1]}"#, "must list strings"),
            (r#"{"input_topic": ["a/#"]}"#, "may hold only"),
            (r#"{"output_topic": ["a//b"]}"#, "empty segment"),
            (r#"{"output_topic": ["a", "a"]}"#, "twice"),
            (
                r#"{"input_base_topic": ["reboot/pepeunit"]}"#,
                "unknown standard topic",
            ),
        ];
        for (text, want) in cases {
            let err = SchemaExample::parse("schema_example.json", text.as_bytes()).unwrap_err();
            assert_eq!(err.file, "schema_example.json");
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }

    proptest! {
        #[test]
        fn topic_names_never_carry_wildcards(s in "\\PC{0,30}") {
            if let Ok(t) = TopicName::parse(&s) {
                prop_assert!(!t.as_str().contains(['+', '#']));
                prop_assert!(!t.as_str().starts_with('/') && !t.as_str().ends_with('/'));
            }
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SchemaExample::parse("schema_example.json", &bytes);
        }
    }
}
