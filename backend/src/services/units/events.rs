//! What happened to units, for whoever delivers it to devices (the broker) or to browsers.
//!
//! Services publish; they never know who listens. A lagging listener loses events, so listeners that must
//! not miss one (the broker's commands) treat a lag as "everything changed" and re-read the database.

use tokio::sync::broadcast;
use uuid::Uuid;

/// A command a user sends a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitCommand {
    LogSync,
    Reset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitEvent {
    /// env.json changed: the unit should download it again.
    EnvChanged(Uuid),
    /// schema.json changed (a link, or the target's schema): the unit should download it again, and
    /// what it may publish and subscribe to changed.
    SchemaChanged(Uuid),
    /// The unit should run another commit.
    TargetChanged {
        unit: Uuid,
        commit: String,
    },
    /// The unit's token was revoked or the unit deleted: it must be disconnected.
    Revoked(Uuid),
    /// The unit's visibility changed: who may see it (peers included) changed.
    VisibilityChanged(Uuid),
    /// A user set an input's value.
    InputSet {
        node: Uuid,
        value: String,
    },
    Command {
        unit: Uuid,
        command: UnitCommand,
    },
}

/// The event stream.
pub struct UnitEvents {
    sender: broadcast::Sender<UnitEvent>,
}

impl Default for UnitEvents {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl UnitEvents {
    pub fn subscribe(&self) -> broadcast::Receiver<UnitEvent> {
        self.sender.subscribe()
    }

    /// Publishes `event`; nobody listening is fine.
    pub fn send(&self, event: UnitEvent) {
        let _ = self.sender.send(event);
    }
}
