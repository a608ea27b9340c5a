//! Live data for browsers: values, state, logs and presence as they arrive.
//!
//! A broadcast of small events; slow listeners skip ahead (a live view shows the latest, and the
//! history is in the database). Who may see what is decided when a listener subscribes.

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A node's new value (published by a unit or set by a user).
    Value {
        unit: Uuid,
        node: Uuid,
        value: String,
        at: DateTime<Utc>,
    },
    /// A unit's `state/pepeunit` payload.
    State { unit: Uuid, state: String },
    /// A log line from a unit.
    Log {
        unit: Uuid,
        level: String,
        text: String,
    },
    /// A unit connected to or left the broker.
    Presence { unit: Uuid, online: bool },
}

impl LiveEvent {
    pub fn unit(&self) -> Uuid {
        match self {
            LiveEvent::Value { unit, .. }
            | LiveEvent::State { unit, .. }
            | LiveEvent::Log { unit, .. }
            | LiveEvent::Presence { unit, .. } => *unit,
        }
    }
}

/// The live stream, and which units are connected now.
pub struct LiveFeed {
    sender: broadcast::Sender<LiveEvent>,
    online: std::sync::Mutex<std::collections::HashMap<Uuid, usize>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(16_384).0,
            online: std::sync::Mutex::default(),
        }
    }
}

impl LiveFeed {
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.sender.subscribe()
    }

    pub fn send(&self, event: LiveEvent) {
        if let LiveEvent::Presence { unit, online } = event {
            let mut counts = self.online.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(unit).or_default();
            if online {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&unit);
                }
            }
        }
        let _ = self.sender.send(event);
    }

    /// Whether `unit` has a connection to the broker now.
    pub fn is_online(&self, unit: Uuid) -> bool {
        self.online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&unit)
    }

    /// Whether anyone is listening; producers skip building events otherwise.
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }
}
