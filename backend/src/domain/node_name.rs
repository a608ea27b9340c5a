//! The display name of a repo_unit or a unit.

use std::fmt;

use super::InvalidValue;

/// 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim();
        if value.is_empty() || value.chars().count() > 100 {
            return Err(InvalidValue::new(
                "name",
                "must be 1 to 100 characters long",
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsed_names_are_trimmed_and_bounded(s in "\\PC{0,120}") {
            if let Ok(name) = NodeName::parse(&s) {
                prop_assert_eq!(name.as_str(), s.trim());
                prop_assert!((1..=100).contains(&name.as_str().chars().count()));
            }
        }
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(NodeName::parse("bad\u{7}name").is_err());
        assert!(NodeName::parse("   ").is_err());
    }
}
