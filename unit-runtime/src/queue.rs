//! Outputs produced while the unit is offline, kept on disk until the broker is back.
//!
//! The queue is bounded: when full, the oldest entry goes and a counter says how many went, because on
//! a device that stays offline for days the newest values are the useful ones. Entries are appended as
//! JSON lines and the file is compacted once it holds twice the bound, so a push costs one append.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub topic: String,
    pub payload: String,
}

pub struct OfflineQueue {
    path: PathBuf,
    limit: usize,
    entries: VecDeque<Queued>,
    /// Lines in the file, dropped ones included, until the next compaction.
    lines: usize,
    dropped: u64,
    file: Option<File>,
}

impl OfflineQueue {
    /// Opens the queue left by the last run; entries beyond the bound count as dropped.
    pub fn open(path: PathBuf, limit: usize) -> Result<Self> {
        let limit = limit.max(1);
        let mut entries = VecDeque::new();
        let mut lines = 0;
        let mut dropped = 0;
        let mut damaged = false;
        match File::open(&path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line.at(&path)?;
                    lines += 1;
                    // A torn last line (power loss mid-append) is skipped, not fatal.
                    let Ok(entry) = serde_json::from_str::<Queued>(&line) else {
                        damaged = true;
                        continue;
                    };
                    if entries.len() == limit {
                        entries.pop_front();
                        dropped += 1;
                    }
                    entries.push_back(entry);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(path),
        }
        let mut queue = Self {
            path,
            limit,
            entries,
            lines,
            dropped,
            file: None,
        };
        if damaged {
            // Appending after a torn line would glue the next entry to it.
            queue.rewrite()?;
        }
        Ok(queue)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries were dropped to keep the bound, since the agent started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn push(&mut self, entry: Queued) -> Result<()> {
        let line = serde_json::to_string(&entry).map_err(|e| Error::Invalid(e.to_string()))?;
        if self.entries.len() == self.limit {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(entry);
        if self.lines >= 2 * self.limit {
            return self.rewrite();
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .at(&self.path)?,
            ),
        };
        writeln!(file, "{line}").at(&self.path)?;
        // Each value is on disk before the program is told it was taken.
        file.sync_data().at(&self.path)?;
        self.lines += 1;
        Ok(())
    }

    fn rewrite(&mut self) -> Result<()> {
        let mut bytes = Vec::new();
        for entry in &self.entries {
            serde_json::to_writer(&mut bytes, entry).map_err(|e| Error::Invalid(e.to_string()))?;
            bytes.push(b'\n');
        }
        self.file = None;
        durable::write(&self.path, &bytes)?;
        self.lines = self.entries.len();
        Ok(())
    }

    /// Takes every entry, oldest first, and empties the file.
    pub fn drain(&mut self) -> Result<Vec<Queued>> {
        let entries: Vec<Queued> = self.entries.drain(..).collect();
        if self.lines > 0 {
            self.rewrite()?;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: usize) -> Queued {
        Queued {
            topic: "t".into(),
            payload: i.to_string(),
        }
    }

    #[test]
    fn survives_reopen_and_drops_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.jsonl");
        let mut queue = OfflineQueue::open(path.clone(), 3).unwrap();
        for i in 0..5 {
            queue.push(entry(i)).unwrap();
        }
        assert_eq!(queue.dropped(), 2);
        drop(queue);
        let mut queue = OfflineQueue::open(path.clone(), 3).unwrap();
        let payloads: Vec<_> = queue
            .drain()
            .unwrap()
            .into_iter()
            .map(|e| e.payload)
            .collect();
        assert_eq!(payloads, ["2", "3", "4"]);
        assert!(OfflineQueue::open(path, 3).unwrap().is_empty());
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.jsonl");
        std::fs::write(
            &path,
            "{\"topic\":\"t\",\"payload\":\"1\"}\n{\"topic\":\"t\",\"pay",
        )
        .unwrap();
        let mut queue = OfflineQueue::open(path.clone(), 10).unwrap();
        assert_eq!(queue.len(), 1);
        queue.push(entry(2)).unwrap();
        assert_eq!(OfflineQueue::open(path, 10).unwrap().len(), 2);
    }

    proptest! {
        #[test]
        fn keeps_the_newest_limit_entries(limit in 1usize..20, pushes in 0usize..100) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q");
            let mut queue = OfflineQueue::open(path.clone(), limit).unwrap();
            for i in 0..pushes {
                queue.push(entry(i)).unwrap();
            }
            let reopened: Vec<_> = OfflineQueue::open(path, limit).unwrap().drain().unwrap()
                .into_iter().map(|e| e.payload).collect();
            let want: Vec<_> = (pushes.saturating_sub(limit)..pushes).map(|i| i.to_string()).collect();
            prop_assert_eq!(reopened, want);
            prop_assert_eq!(queue.dropped() as usize, pushes.saturating_sub(limit));
        }
    }
}
