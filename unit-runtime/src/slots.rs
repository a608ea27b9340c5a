//! A/B firmware slots: the confirmed version keeps running from one slot while an update unpacks into
//! the other; `current` is a symlink switched atomically, and `slots.json` records which slot is
//! confirmed and which update is on trial.
//!
//! Every step is durable before the next begins, so after a power loss at any point [`Slots::open`] finds
//! either the confirmed version or an unfinished trial, and an unfinished trial is always undone: the
//! version that last proved healthy runs again, and the update is retried when the server repeats it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, IoContext, Result};
use crate::home::Home;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Self {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The symlink target, relative so the home directory can move.
    fn link_target(self) -> PathBuf {
        Path::new("slots").join(self.name())
    }
}

/// An update being tried: it runs from `slot` but is not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub slot: Slot,
    pub commit: String,
    pub sha256: Option<String>,
}

/// An update this device gave up on; it is not tried again unless the server sends a different archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub commit: String,
    pub sha256: Option<String>,
    pub reason: String,
}

/// How many refusals are remembered; older ones are forgotten.
const REFUSALS_KEPT: usize = 16;
/// How many interrupted trials of one update are retried before it counts as failed.
pub const MAX_INTERRUPTED: u32 = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The confirmed slot and the commit in it.
    pub active: Option<(Slot, String)>,
    pub trial: Option<Trial>,
    /// Trials cut short by a crash or power loss: commit and count.
    #[serde(default)]
    pub interrupted: Option<(String, u32)>,
    #[serde(default)]
    pub refused: Vec<Refusal>,
}

/// What [`Slots::open`] had to repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    Clean,
    /// A trial of `commit` was cut short; the confirmed version is current again.
    TrialUndone {
        commit: String,
    },
}

pub struct Slots {
    home: Home,
    record: Record,
}

impl Slots {
    /// Loads the record and undoes whatever a crash left half done.
    pub fn open(home: &Home) -> Result<(Self, Recovery)> {
        let path = home.record_file();
        let record = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(e) => return Err(e).at(path),
        };
        let mut slots = Self {
            home: home.clone(),
            record,
        };
        // Leftovers of an unpack that never finished.
        for slot in [Slot::A, Slot::B] {
            durable::remove(&slots.staging(slot))?;
        }
        let recovery = match slots.record.trial.take() {
            Some(trial) => {
                let count = match &slots.record.interrupted {
                    Some((commit, count)) if *commit == trial.commit => count + 1,
                    _ => 1,
                };
                slots.record.interrupted = Some((trial.commit.clone(), count));
                slots.save()?;
                Recovery::TrialUndone {
                    commit: trial.commit,
                }
            }
            None => Recovery::Clean,
        };
        slots.point_current()?;
        Ok((slots, recovery))
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The confirmed commit.
    pub fn commit(&self) -> Option<&str> {
        self.record
            .active
            .as_ref()
            .map(|(_, commit)| commit.as_str())
    }

    pub fn trial(&self) -> Option<&Trial> {
        self.record.trial.as_ref()
    }

    /// The directory of the version that runs now (the trial's while there is one).
    pub fn running_dir(&self) -> Option<PathBuf> {
        let slot = match (&self.record.trial, &self.record.active) {
            (Some(trial), _) => trial.slot,
            (None, Some((slot, _))) => *slot,
            (None, None) => return None,
        };
        Some(self.dir(slot))
    }

    /// The commit that runs now.
    pub fn running_commit(&self) -> Option<&str> {
        match (&self.record.trial, &self.record.active) {
            (Some(trial), _) => Some(&trial.commit),
            (None, Some((_, commit))) => Some(commit),
            (None, None) => None,
        }
    }

    pub fn dir(&self, slot: Slot) -> PathBuf {
        self.home.slots_dir().join(slot.name())
    }

    fn staging(&self, slot: Slot) -> PathBuf {
        self.home.slots_dir().join(format!("{}.new", slot.name()))
    }

    /// The slot an update unpacks into: never the confirmed one.
    pub fn inactive(&self) -> Slot {
        self.record
            .active
            .as_ref()
            .map_or(Slot::A, |(slot, _)| slot.other())
    }

    /// Whether the device already gave up on this exact update.
    pub fn refusal(&self, commit: &str, sha256: Option<&str>) -> Option<&Refusal> {
        self.record
            .refused
            .iter()
            .find(|r| r.commit == commit && r.sha256.as_deref() == sha256)
    }

    /// Whether `commit` was interrupted so often that it should count as failed.
    pub fn interrupted_too_often(&self, commit: &str) -> bool {
        matches!(&self.record.interrupted, Some((c, n)) if c == commit && *n >= MAX_INTERRUPTED)
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.record)
            .map_err(|e| Error::Invalid(format!("slot record: {e}")))?;
        durable::write(&self.home.record_file(), &bytes)
    }

    /// Makes `current` point at the running version, if it does not already.
    fn point_current(&self) -> Result<()> {
        let slot = match (&self.record.trial, &self.record.active) {
            (Some(trial), _) => trial.slot,
            (None, Some((slot, _))) => *slot,
            (None, None) => return Ok(()),
        };
        let link = self.home.current();
        if std::fs::read_link(&link).ok().as_deref() != Some(slot.link_target().as_path()) {
            durable::symlink(&slot.link_target(), &link)?;
        }
        Ok(())
    }

    /// Unpacks a downloaded archive (tar in a zlib/gzip/raw stream, or plain tar) and `files` into `slot`,
    /// replacing what was there. The slot is complete on disk before it gets its name.
    pub fn unpack(&self, slot: Slot, archive: &Path, files: &[(&str, &[u8])]) -> Result<()> {
        if self.record.active.as_ref().is_some_and(|(s, _)| *s == slot) {
            return Err(Error::Invalid(
                "refusing to unpack over the confirmed slot".into(),
            ));
        }
        let staging = self.staging(slot);
        durable::remove(&staging)?;
        std::fs::create_dir_all(&staging).at(&staging)?;
        crate::update::unpack(archive, &staging)?;
        for (name, bytes) in files {
            let path = staging.join(name);
            std::fs::write(&path, bytes).at(&path)?;
        }
        durable::sync_tree(&staging)?;
        let dir = self.dir(slot);
        durable::remove(&dir)?;
        std::fs::rename(&staging, &dir).at(&dir)?;
        durable::sync_dir(&self.home.slots_dir())
    }

    /// Installs the first version, with nothing to fall back to: confirmed at once.
    pub fn install_first(&mut self, slot: Slot, commit: &str) -> Result<()> {
        self.record.active = Some((slot, commit.to_owned()));
        self.save()?;
        self.point_current()
    }

    /// Starts trying the version unpacked in `slot`: recorded first, then switched to.
    pub fn begin_trial(&mut self, trial: Trial) -> Result<()> {
        self.record.trial = Some(trial);
        self.save()?;
        crate::failpoint::hit("update.trial_recorded");
        self.point_current()?;
        crate::failpoint::hit("update.switched");
        Ok(())
    }

    /// The trial proved healthy: its slot becomes the confirmed one.
    pub fn confirm(&mut self) -> Result<()> {
        if let Some(trial) = self.record.trial.take() {
            self.record.active = Some((trial.slot, trial.commit));
            self.record.interrupted = None;
            self.save()?;
        }
        Ok(())
    }

    /// The trial failed: the confirmed version is current again and the update is remembered as refused.
    pub fn roll_back(&mut self, reason: &str) -> Result<Option<Trial>> {
        let Some(trial) = self.record.trial.take() else {
            return Ok(None);
        };
        self.refuse(&trial.commit, trial.sha256.as_deref(), reason);
        self.save()?;
        self.point_current()?;
        Ok(Some(trial))
    }

    /// Remembers that this update is not to be tried again.
    pub fn refuse(&mut self, commit: &str, sha256: Option<&str>, reason: &str) {
        self.record
            .refused
            .retain(|r| !(r.commit == commit && r.sha256.as_deref() == sha256));
        self.record.refused.push(Refusal {
            commit: commit.to_owned(),
            sha256: sha256.map(str::to_owned),
            reason: reason.to_owned(),
        });
        if self.record.refused.len() > REFUSALS_KEPT {
            self.record.refused.remove(0);
        }
    }

    /// Persists refusals recorded outside a trial (a bad archive).
    pub fn save_refusals(&self) -> Result<()> {
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        (dir, home)
    }

    fn fake_slot(slots: &Slots, slot: Slot, marker: &str) {
        let dir = slots.dir(slot);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("version"), marker).unwrap();
    }

    fn trial_in_b(commit: &str) -> Trial {
        Trial {
            slot: Slot::B,
            commit: commit.into(),
            sha256: None,
        }
    }

    fn current_marker(home: &Home) -> String {
        std::fs::read_to_string(home.current().join("version")).unwrap()
    }

    #[test]
    fn trial_confirm_and_rollback() {
        let (_dir, home) = home();
        let (mut slots, recovery) = Slots::open(&home).unwrap();
        assert_eq!(recovery, Recovery::Clean);
        fake_slot(&slots, Slot::A, "one");
        slots.install_first(Slot::A, "c1").unwrap();
        assert_eq!(current_marker(&home), "one");

        assert_eq!(slots.inactive(), Slot::B);
        fake_slot(&slots, Slot::B, "two");
        slots.begin_trial(trial_in_b("c2")).unwrap();
        assert_eq!(current_marker(&home), "two");
        slots.roll_back("crashed").unwrap();
        assert_eq!(current_marker(&home), "one");
        assert!(slots.refusal("c2", None).is_some());

        slots.begin_trial(trial_in_b("c3")).unwrap();
        slots.confirm().unwrap();
        assert_eq!(slots.commit(), Some("c3"));
        assert_eq!(slots.inactive(), Slot::A);
    }

    #[test]
    fn reopening_undoes_an_unfinished_trial() {
        let (_dir, home) = home();
        let (mut slots, _) = Slots::open(&home).unwrap();
        fake_slot(&slots, Slot::A, "one");
        slots.install_first(Slot::A, "c1").unwrap();
        fake_slot(&slots, Slot::B, "two");
        slots.begin_trial(trial_in_b("c2")).unwrap();
        drop(slots);
        for round in 1..=MAX_INTERRUPTED {
            let (mut slots, recovery) = Slots::open(&home).unwrap();
            assert_eq!(
                recovery,
                Recovery::TrialUndone {
                    commit: "c2".into()
                }
            );
            assert_eq!(current_marker(&home), "one");
            assert_eq!(slots.commit(), Some("c1"));
            assert_eq!(slots.interrupted_too_often("c2"), round >= MAX_INTERRUPTED);
            slots.begin_trial(trial_in_b("c2")).unwrap();
        }
    }
}
