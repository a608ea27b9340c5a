//! A password as typed by a user, before hashing.

use super::InvalidValue;

/// 8 to 128 characters, not only whitespace. Kept out of `Debug` output.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(********)")
    }
}

impl Password {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let len = raw.chars().count();
        if len < 8 {
            return Err(InvalidValue::new(
                "password",
                "must be at least 8 characters long",
            ));
        }
        if len > 128 {
            return Err(InvalidValue::new(
                "password",
                "must be at most 128 characters long",
            ));
        }
        if raw.trim().is_empty() {
            return Err(InvalidValue::new("password", "must not be only whitespace"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_hides_the_value() {
        let p = Password::parse("correct horse").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }

    proptest! {
        #[test]
        fn length_bounds(s in "\\PC{0,140}") {
            let n = s.chars().count();
            let ok = (8..=128).contains(&n) && !s.trim().is_empty();
            prop_assert_eq!(Password::parse(&s).is_ok(), ok);
        }
    }
}
