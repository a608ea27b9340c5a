//! The agent's home directory and what lives in it.
//!
//! ```text
//! env.json, schema.json   the unit's files (rewritten atomically on env_update / schema_update)
//! slots/a, slots/b        two unpacked firmware versions
//! current -> slots/a      the running version; switched by renaming a symlink
//! slots.json              which slot is confirmed, and the update on trial, if any
//! queue.jsonl             outputs produced while offline
//! firmware.download       an archive being downloaded
//! agent.sock              the local socket programs may use instead of stdin/stdout
//! ```

use std::path::{Path, PathBuf};

use pepeunit_protocol::device::{UnitEnv, UnitSchema};

use crate::error::{IoContext, Result};

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("slots")).at(root)?;
        let root = root.canonicalize().at(root)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn env_file(&self) -> PathBuf {
        self.root.join("env.json")
    }

    pub fn schema_file(&self) -> PathBuf {
        self.root.join("schema.json")
    }

    pub fn slots_dir(&self) -> PathBuf {
        self.root.join("slots")
    }

    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    pub fn record_file(&self) -> PathBuf {
        self.root.join("slots.json")
    }

    pub fn queue_file(&self) -> PathBuf {
        self.root.join("queue.jsonl")
    }

    pub fn download_file(&self) -> PathBuf {
        self.root.join("firmware.download")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }

    pub fn read_env(&self) -> Result<UnitEnv> {
        let path = self.env_file();
        Ok(UnitEnv::parse(&std::fs::read(&path).at(&path)?)?)
    }

    /// The schema file, if the unit has one yet (the agent fetches it on first start otherwise).
    pub fn read_schema(&self) -> Result<Option<UnitSchema>> {
        let path = self.schema_file();
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(UnitSchema::parse(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }
}
