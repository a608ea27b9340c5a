//! Whether a commit can be used to build units: it must hold a valid `env_example.json` and a valid
//! `schema_example.json` (or the older name `schema.json`).

use pepeunit_protocol::env::EnvExample;
use pepeunit_protocol::schema::SchemaExample;

use crate::{Mirror, RepoError};

pub const ENV_EXAMPLE: &str = "env_example.json";
pub const SCHEMA_EXAMPLE: &str = "schema_example.json";
pub const SCHEMA_LEGACY: &str = "schema.json";

/// The verdict on one commit.
#[derive(Debug, Clone)]
pub struct CommitCheck {
    pub commit: String,
    /// Each problem names the file and what is wrong; empty when the commit is usable.
    pub problems: Vec<String>,
    pub env_example: Option<EnvExample>,
    pub schema_example: Option<SchemaExample>,
}

impl CommitCheck {
    pub fn usable(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads and validates both files at `revision`.
pub fn check_commit(mirror: &Mirror, revision: &str) -> Result<CommitCheck, RepoError> {
    let commit = mirror.resolve(revision)?;
    let mut problems = Vec::new();
    let env_example = match mirror.read_file(&commit, ENV_EXAMPLE)? {
        None => {
            problems.push(format!("{ENV_EXAMPLE}: the file is missing"));
            None
        }
        Some(bytes) => EnvExample::parse(ENV_EXAMPLE, &bytes)
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
    };
    let schema_file = match mirror.read_file(&commit, SCHEMA_EXAMPLE)? {
        Some(bytes) => Some((SCHEMA_EXAMPLE, bytes)),
        None => mirror
            .read_file(&commit, SCHEMA_LEGACY)?
            .map(|b| (SCHEMA_LEGACY, b)),
    };
    let schema_example = match schema_file {
        None => {
            problems.push(format!(
                "{SCHEMA_EXAMPLE}: the file is missing (nor is there {SCHEMA_LEGACY})"
            ));
            None
        }
        Some((name, bytes)) => SchemaExample::parse(name, &bytes)
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
    };
    Ok(CommitCheck {
        commit,
        problems,
        env_example,
        schema_example,
    })
}
