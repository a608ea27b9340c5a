//! What instances send each other, as JSON: the instance actor, the unit object and the activities.
//!
//! Standard ActivityStreams types where one fits (an `Application` actor; `Follow`, `Accept`, `Reject`,
//! `Undo`, `Block`); Pepeunit's own where none does (a `Unit` object, a `Values` activity carrying many
//! samples). Only types here: what receiving one does is in [`crate::inbox`].

use activitypub_federation::kinds::activity::{
    AcceptType, BlockType, FollowType, RejectType, UndoType,
};
use activitypub_federation::kinds::actor::ApplicationType;
use activitypub_federation::protocol::public_key::PublicKey;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

/// The ActivityStreams types of the activities, for building them.
pub mod kinds {
    pub use activitypub_federation::kinds::activity::{
        AcceptType, BlockType, FollowType, RejectType, UndoType,
    };
}

/// The one actor of an instance: it signs everything the instance sends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceActorJson {
    #[serde(rename = "type")]
    pub kind: ApplicationType,
    pub id: Url,
    pub inbox: Url,
    pub preferred_username: String,
    pub public_key: PublicKey,
}

/// The `type` of a [`UnitObject`].
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum UnitType {
    #[default]
    Unit,
}

/// The `type` of a [`Values`] activity.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ValuesType {
    #[default]
    Values,
}

/// A unit as its home instance shows it to peers: its outputs, never its inputs or secrets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnitObject {
    #[serde(rename = "type")]
    pub kind: UnitType,
    pub id: Url,
    pub uuid: Uuid,
    pub name: String,
    pub outputs: Vec<OutputObject>,
}

/// One output variable of a shared unit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputObject {
    pub uuid: Uuid,
    /// The variable's name in the unit's schema (its `topic_name`).
    pub name: String,
    #[serde(default)]
    pub last_value: Option<String>,
    #[serde(default)]
    pub last_value_at: Option<DateTime<Utc>>,
}

/// Asks to peer (object: the other instance actor) or to receive a unit's values (object: the unit).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Follow {
    pub id: Url,
    #[serde(rename = "type")]
    pub kind: FollowType,
    pub actor: Url,
    pub object: Url,
}

/// Grants a [`Follow`]; for a unit, `result` carries the unit as it is now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Accept {
    pub id: Url,
    #[serde(rename = "type")]
    pub kind: AcceptType,
    pub actor: Url,
    pub object: Follow,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<UnitObject>,
}

/// Refuses a [`Follow`], or ends one that was accepted (the unit went away, the peering ended).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reject {
    pub id: Url,
    #[serde(rename = "type")]
    pub kind: RejectType,
    pub actor: Url,
    pub object: Follow,
}

/// Withdraws the sender's own [`Follow`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Undo {
    pub id: Url,
    #[serde(rename = "type")]
    pub kind: UndoType,
    pub actor: Url,
    pub object: Follow,
}

/// The sender blocked the receiving instance (object: its actor): the peering is over.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Block {
    pub id: Url,
    #[serde(rename = "type")]
    pub kind: BlockType,
    pub actor: Url,
    pub object: Url,
}

/// Many samples of followed outputs in one signed request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Values {
    pub id: Url,
    #[serde(rename = "type")]
    pub kind: ValuesType,
    pub actor: Url,
    pub samples: Vec<Sample>,
}

/// One value of one output. `sequence` grows per output; a receiver applies a sample only if its
/// sequence is above the last one it applied, so retries and replays are dropped.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub unit: Uuid,
    pub output: Uuid,
    pub value: String,
    pub time: DateTime<Utc>,
    pub sequence: u64,
}

/// Any activity an inbox takes. Untagged: each variant's `type` field accepts only its own type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Incoming {
    Follow(Follow),
    Accept(Accept),
    Reject(Reject),
    Undo(Undo),
    Block(Block),
    Values(Values),
}

impl Incoming {
    pub fn id(&self) -> &Url {
        match self {
            Self::Follow(a) => &a.id,
            Self::Accept(a) => &a.id,
            Self::Reject(a) => &a.id,
            Self::Undo(a) => &a.id,
            Self::Block(a) => &a.id,
            Self::Values(a) => &a.id,
        }
    }

    pub fn actor(&self) -> &Url {
        match self {
            Self::Follow(a) => &a.actor,
            Self::Accept(a) => &a.actor,
            Self::Reject(a) => &a.actor,
            Self::Undo(a) => &a.actor,
            Self::Block(a) => &a.actor,
            Self::Values(a) => &a.actor,
        }
    }

    /// The activity's type name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Follow(_) => "Follow",
            Self::Accept(_) => "Accept",
            Self::Reject(_) => "Reject",
            Self::Undo(_) => "Undo",
            Self::Block(_) => "Block",
            Self::Values(_) => "Values",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Each fixture parses as the activity it is and writes back to the same JSON (apart from
    /// `@context`, which [`activitypub_federation::protocol::context::WithContext`] adds on sending).
    fn round_trip(name: &str) -> Incoming {
        let text = fixture(name);
        let parsed: Incoming = serde_json::from_str(&text).unwrap();
        let mut original: serde_json::Value = serde_json::from_str(&text).unwrap();
        original.as_object_mut().unwrap().remove("@context");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original, "{name}");
        parsed
    }

    #[test]
    fn peering_activities_parse_as_their_types() {
        assert!(matches!(round_trip("follow_instance"), Incoming::Follow(_)));
        let Incoming::Accept(accept) = round_trip("accept_instance") else {
            panic!("not an Accept")
        };
        assert_eq!(accept.object.object, accept.actor);
        assert!(accept.result.is_none());
        assert!(matches!(round_trip("reject_instance"), Incoming::Reject(_)));
        assert!(matches!(round_trip("undo_follow"), Incoming::Undo(_)));
        assert!(matches!(round_trip("block"), Incoming::Block(_)));
    }

    #[test]
    fn a_unit_follow_is_accepted_with_the_unit() {
        let Incoming::Accept(accept) = round_trip("accept_unit") else {
            panic!("not an Accept")
        };
        let unit = accept.result.unwrap();
        assert_eq!(unit.id, accept.object.object);
        assert_eq!(unit.outputs[0].name, "temperature/pepeunit");
    }

    #[test]
    fn values_carry_many_samples() {
        let Incoming::Values(values) = round_trip("values") else {
            panic!("not Values")
        };
        assert_eq!(values.samples.len(), 3);
        assert!(values.samples[0].sequence < values.samples[1].sequence);
    }

    #[test]
    fn the_instance_actor_has_its_key() {
        let actor: InstanceActorJson = serde_json::from_str(&fixture("instance_actor")).unwrap();
        assert_eq!(actor.public_key.owner, actor.id);
        assert!(
            actor
                .public_key
                .public_key_pem
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    #[test]
    fn unknown_types_and_missing_fields_are_refused() {
        let like = r#"{"id":"https://a.example/x","type":"Like","actor":"https://a.example/federation/actor","object":"https://b.example/"}"#;
        assert!(serde_json::from_str::<Incoming>(like).is_err());
        let no_actor =
            r#"{"id":"https://a.example/x","type":"Follow","object":"https://b.example/"}"#;
        assert!(serde_json::from_str::<Incoming>(no_actor).is_err());
    }
}
