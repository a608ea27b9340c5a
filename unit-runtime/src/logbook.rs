//! The unit's own log, as the server shows it: entries of `{level, text, create_datetime}` published on
//! `log/pepeunit` as they happen, and all at once on `log_sync`.
//!
//! Entries below `PU_MIN_LOG_LEVEL` are dropped; the newest `PU_MAX_LOG_LENGTH` are kept, like the
//! reference client's log file.

use std::collections::VecDeque;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub level: Level,
    pub text: String,
    pub create_datetime: String,
}

pub struct Logbook {
    min: Level,
    keep: usize,
    entries: VecDeque<Entry>,
}

impl Logbook {
    pub fn new(min_level: &str, keep: usize) -> Self {
        Self {
            min: Level::parse(min_level).unwrap_or(Level::Debug),
            keep: keep.max(1),
            entries: VecDeque::new(),
        }
    }

    /// Records an entry; returns it if it passed the level filter (so it can be published).
    pub fn add(&mut self, level: Level, text: impl Into<String>) -> Option<Entry> {
        let text = text.into();
        // The agent's own log (journald under systemd) sees everything, filtered or not.
        tracing::info!(?level, "{text}");
        if level < self.min {
            return None;
        }
        let entry = Entry {
            level,
            text,
            create_datetime: chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6f")
                .to_string(),
        };
        if self.entries.len() == self.keep {
            self.entries.pop_front();
        }
        self.entries.push_back(entry.clone());
        Some(entry)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_keeps_the_newest() {
        let mut log = Logbook::new("Info", 2);
        assert!(log.add(Level::Debug, "hidden").is_none());
        log.add(Level::Info, "one");
        log.add(Level::Error, "two");
        log.add(Level::Warning, "three");
        let texts: Vec<_> = log.entries().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["two", "three"]);
        let json = serde_json::to_value(log.entries().next().unwrap()).unwrap();
        assert_eq!(json["level"], "Error");
    }
}
