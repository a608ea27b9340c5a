//! The agent's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Format(#[from] pepeunit_protocol::schema::FormatError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the server answered {status} to {what}")]
    Status { what: String, status: u16 },
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error("archive: {0}")]
    Archive(String),
    #[error("firmware SHA-256 is {actual}, the server announced {expected}")]
    Checksum { expected: String, actual: String },
    #[error("mDNS: {0}")]
    Discovery(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the path to an I/O error, so every message says which file failed.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
