//! A user's login name.

use std::fmt;

use super::InvalidValue;

/// 3 to 32 characters of ASCII letters, digits, `_`, `-` and `.`, starting with a letter or digit.
/// Compared case-insensitively by storing it lower-cased, so `Alice` and `alice` are one account.
/// `ghost` is reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login(String);

impl Login {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let value = raw.trim();
        let len = value.chars().count();
        if !(3..=32).contains(&len) {
            return Err(InvalidValue::new(
                "login",
                "must be 3 to 32 characters long",
            ));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(InvalidValue::new(
                "login",
                "may hold only letters, digits, '_', '-' and '.'",
            ));
        }
        if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(InvalidValue::new(
                "login",
                "must start with a letter or digit",
            ));
        }
        let value = value.to_ascii_lowercase();
        // The account that keeps deleted users' shared repo_units (services/user_deletion.rs).
        if value == "ghost" {
            return Err(InvalidValue::new("login", "is reserved"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(Login::parse(" Alice_01 ").unwrap().as_str(), "alice_01");
        for bad in ["ab", "", "a b c", "-dash", "ünï", &"x".repeat(33)] {
            assert!(Login::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn valid_shapes_parse(s in "[a-zA-Z0-9][a-zA-Z0-9_.-]{2,31}") {
            let parsed = Login::parse(&s).unwrap();
            prop_assert_eq!(parsed.as_str(), s.to_ascii_lowercase());
        }

        #[test]
        fn anything_parsed_is_well_formed(s in "\\PC{0,40}") {
            if let Ok(login) = Login::parse(&s) {
                let v = login.as_str();
                prop_assert!((3..=32).contains(&v.len()));
                prop_assert!(v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c)));
            }
        }
    }
}
