//! Git mirrors of unit firmware repositories (repo_units), with no database in sight.
//!
//! - [`remote`]: which clone URLs are acceptable, including the refusal of loopback and private hosts;
//! - [`mirror`]: cloning and fetching a bare mirror with git2, a size limit enforced while the pack
//!   downloads, listing branches, tags and commits, and reading files at any revision;
//! - [`bundle`]: firmware archives (zip, tar, tar.gz) of one commit, safe to unpack on a device;
//! - [`transport`]: the http, https and git transports libgit2 fetches through, which check every
//!   address at connect time, speak HTTP with reqwest and rustls, and bound what a remote may send;
//! - [`check`]: whether a commit is usable for units (`env_example.json` and `schema_example.json`).
//!
//! git2 is blocking: callers run these functions on a blocking thread.

pub mod bundle;
pub mod check;
pub mod mirror;
pub mod remote;
pub mod transport;

pub use bundle::{
    ArchiveFormat, BundleLimits, BundlePlan, DeflateStream, ExtraFile, Framing, plan_bundle,
    write_bundle, write_planned,
};
pub use check::{CommitCheck, check_commit};
pub use mirror::{BranchMove, CommitInfo, Credentials, Mirror, RefInfo};
pub use remote::{CloneUrl, RemotePolicy};

/// What can go wrong with a repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("clone URL refused: {0}")]
    UrlRefused(String),
    #[error("the repository is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the bundle is too large: {0}")]
    BundleTooLarge(String),
    #[error("the remote refused the credentials")]
    AuthFailed,
    #[error("no such revision: {0}")]
    UnknownRevision(String),
    #[error("git: {0}")]
    Git(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<git2::Error> for RepoError {
    fn from(error: git2::Error) -> Self {
        RepoError::Git(error.message().to_owned())
    }
}
