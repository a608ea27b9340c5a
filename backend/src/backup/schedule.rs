//! Scheduled backups: with `backup_dir` set, the server writes a backup there every
//! `backup_interval_seconds`, keeps the newest `backup_keep` and records the outcome of the last run in
//! `<backup_dir>/last-backup.json`, which admins read through GraphQL (`lastBackup`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};

use crate::config::Config;

const PREFIX: &str = "pepeunit-";
const SUFFIX: &str = ".backup";
const RESULT_FILE: &str = "last-backup.json";

/// The outcome of the last scheduled backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupRun {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The archive written, when the run succeeded.
    pub file: Option<String>,
    pub bytes: Option<u64>,
    pub rows: Option<u64>,
    /// Why the run failed, when it did.
    pub error: Option<String>,
    /// Older archives removed to keep `backup_keep`.
    pub removed: Vec<String>,
}

/// Where scheduled backups go, for readers of their outcome.
#[derive(Clone, Debug)]
pub struct BackupStatus {
    dir: Option<PathBuf>,
}

impl BackupStatus {
    pub fn new(config: &Config) -> Self {
        Self {
            dir: config.backup_dir.clone(),
        }
    }

    /// The last run's outcome; `None` when scheduled backups are off or none has run yet.
    pub fn last(&self) -> Option<BackupRun> {
        let dir = self.dir.as_ref()?;
        let text = std::fs::read_to_string(dir.join(RESULT_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Runs scheduled backups until the task is dropped; returns at once when `backup_dir` is not set.
pub async fn run(config: Config, db: DatabaseConnection) {
    let Some(dir) = config.backup_dir.clone() else {
        return;
    };
    let period = Duration::from_secs(config.backup_interval_seconds);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // A backup that overran the period is not followed by a burst of catch-up runs.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let run = once(&config, &db, &dir).await;
        match &run.error {
            None => {
                tracing::info!(file = ?run.file, bytes = ?run.bytes, "scheduled backup written")
            }
            Some(error) => tracing::error!(%error, dir = %dir.display(), "scheduled backup failed"),
        }
        if let Err(error) = write_result(&dir, &run) {
            tracing::error!(%error, "cannot record the scheduled backup's outcome");
        }
    }
}

/// One scheduled backup and the rotation after it.
pub async fn once(config: &Config, db: &DatabaseConnection, dir: &Path) -> BackupRun {
    let started_at = Utc::now();
    let name = format!(
        "{PREFIX}{}{SUFFIX}",
        started_at.format("%Y%m%dT%H%M%S%.3fZ")
    );
    let path = dir.join(&name);
    let passphrase = config.backup_passphrase.as_ref().map(|p| p.expose());
    let outcome = match crate::secrets::create_private_dir(dir) {
        Ok(()) => super::create_from(db, config, &path, passphrase).await,
        Err(error) => Err(error.into()),
    };
    let mut run = BackupRun {
        started_at,
        finished_at: Utc::now(),
        file: None,
        bytes: None,
        rows: None,
        error: None,
        removed: Vec::new(),
    };
    match outcome {
        Ok(manifest) => {
            run.bytes = std::fs::metadata(&path).map(|m| m.len()).ok();
            run.rows = Some(manifest.tables.iter().map(|t| t.rows).sum());
            run.file = Some(name);
            // Only after a good backup: a failing schedule never eats the archives that still work.
            match rotate(dir, config.backup_keep) {
                Ok(removed) => run.removed = removed,
                Err(error) => run.error = Some(format!("rotation: {error}")),
            }
        }
        Err(error) => run.error = Some(error.to_string()),
    }
    run.finished_at = Utc::now();
    run
}

/// Removes all but the newest `keep` scheduled archives (their names sort by time); returns their names.
fn rotate(dir: &Path, keep: usize) -> std::io::Result<Vec<String>> {
    let mut archives: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        .collect();
    archives.sort();
    let excess = archives.len().saturating_sub(keep);
    let removed: Vec<String> = archives.into_iter().take(excess).collect();
    for name in &removed {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok(removed)
}

fn write_result(dir: &Path, run: &BackupRun) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{RESULT_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(run)?)?;
    std::fs::rename(tmp, dir.join(RESULT_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_and_leaves_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "pepeunit-20261101T000000.000Z.backup",
            "pepeunit-20261102T000000.000Z.backup",
            "pepeunit-20261103T000000.000Z.backup",
            "manual.backup",
            RESULT_FILE,
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = rotate(dir.path(), 2).unwrap();
        assert_eq!(removed, ["pepeunit-20261101T000000.000Z.backup"]);
        assert!(dir.path().join("manual.backup").exists());
        assert!(
            dir.path()
                .join("pepeunit-20261103T000000.000Z.backup")
                .exists()
        );
    }
}
