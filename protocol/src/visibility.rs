//! Who may see a node: the four access levels of every Pepeunit node.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg(feature = "orm")]
use sea_orm::sea_query::StringLen;

/// The access level of a node (repo_unit, unit, unit node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "orm", derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum))]
#[cfg_attr(
    feature = "orm",
    sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")
)]
pub enum Visibility {
    /// Anyone, without logging in.
    #[cfg_attr(feature = "orm", sea_orm(string_value = "public"))]
    Public,
    /// Any logged-in user of this instance, and the instances it peers with (never anonymous users).
    #[cfg_attr(feature = "orm", sea_orm(string_value = "federated"))]
    Federated,
    /// Any logged-in user of this instance.
    #[cfg_attr(feature = "orm", sea_orm(string_value = "internal"))]
    Internal,
    /// The creator and the users the creator grants access to.
    #[cfg_attr(feature = "orm", sea_orm(string_value = "private"))]
    Private,
}

impl Visibility {
    /// Every level, most open first.
    pub const ALL: [Visibility; 4] = [Self::Public, Self::Federated, Self::Internal, Self::Private];

    /// The stored and wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Federated => "federated",
            Self::Internal => "internal",
            Self::Private => "private",
        }
    }

    /// Whether peers of this instance may see a node of this level (public and federated ones).
    pub fn shared_with_peers(&self) -> bool {
        matches!(self, Self::Public | Self::Federated)
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A visibility name that is none of `public`, `federated`, `internal`, `private`.
#[derive(Debug, thiserror::Error)]
#[error("unknown visibility {0:?}: expected public, federated, internal or private")]
pub struct UnknownVisibility(String);

impl FromStr for Visibility {
    type Err = UnknownVisibility;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVisibility(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        for v in Visibility::ALL {
            assert_eq!(v.as_str().parse::<Visibility>().unwrap(), v);
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{v}\""));
        }
    }

    proptest! {
        #[test]
        fn only_the_three_names_parse(s in "\\PC{0,12}") {
            let parsed = s.parse::<Visibility>();
            prop_assert_eq!(parsed.is_ok(), ["public", "federated", "internal", "private"].contains(&s.as_str()));
        }
    }
}
