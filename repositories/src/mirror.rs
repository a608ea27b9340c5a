//! A bare mirror of a remote repository: all branches and tags, nothing checked out.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use git2::{
    AutotagOption, FetchOptions, FetchPrune, ObjectType, RemoteCallbacks, Repository, Sort,
};

use crate::transport::{FetchContext, with_context};
use crate::{CloneUrl, RepoError};

const BRANCHES: &str = "+refs/heads/*:refs/heads/*";
const TAGS: &str = "+refs/tags/*:refs/tags/*";

/// A username and a password or token for a private remote.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A branch or tag and the commit it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefInfo {
    pub name: String,
    pub commit: String,
}

/// One commit, for pickers in the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub summary: String,
    pub author: String,
    /// Seconds since the epoch.
    pub time: i64,
}

/// A branch that a fetch created, moved or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchMove {
    pub branch: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// An open mirror.
pub struct Mirror {
    repo: Repository,
    path: PathBuf,
}

fn fetch_options(size_limit: Option<u64>, exceeded: &Cell<bool>) -> FetchOptions<'_> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.transfer_progress(move |progress| match size_limit {
        // Checked on every received chunk: an oversized repository is cut off while it downloads.
        Some(limit) if progress.received_bytes() as u64 > limit => {
            exceeded.set(true);
            false
        }
        _ => true,
    });
    let mut options = FetchOptions::new();
    // Credentials, redirects and the address check are the transport's business (crate::transport).
    options
        .remote_callbacks(callbacks)
        .prune(FetchPrune::On)
        .download_tags(AutotagOption::All);
    options
}

/// Bytes a directory takes, its files summed (symlinks not followed).
fn disk_size(path: &Path) -> Result<u64, RepoError> {
    let mut total = 0u64;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total = total.saturating_add(entry.metadata()?.len());
            }
        }
    }
    Ok(total)
}

fn classify(error: git2::Error, size_limit: Option<u64>, exceeded: bool) -> RepoError {
    match (exceeded, size_limit) {
        (true, Some(limit)) => RepoError::TooLarge { limit },
        _ => RepoError::from(error),
    }
}

impl Mirror {
    /// Clones `url` into a new bare mirror at `path`. On any failure nothing is left at `path`.
    ///
    /// `allow_local_remotes` is checked again against the addresses the host resolves to now.
    pub fn clone_into(
        path: &Path,
        url: &CloneUrl,
        credentials: Option<&Credentials>,
        size_limit: Option<u64>,
        allow_local_remotes: bool,
    ) -> Result<Self, RepoError> {
        if path.exists() {
            return Err(RepoError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", path.display()),
            )));
        }
        let result = (|| {
            let repo = Repository::init_bare(path)?;
            repo.remote_with_fetch("origin", url.as_str(), BRANCHES)?;
            repo.remote_add_fetch("origin", TAGS)?;
            let mirror = Self {
                repo,
                path: path.to_path_buf(),
            };
            mirror.fetch(credentials, size_limit, allow_local_remotes)?;
            Ok(mirror)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(path);
        }
        result
    }

    /// Opens an existing mirror.
    pub fn open(path: &Path) -> Result<Self, RepoError> {
        Ok(Self {
            repo: Repository::open_bare(path)?,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The commit time of `revision`, in seconds since the epoch (archive entries carry it).
    pub fn commit_time(&self, revision: &str) -> Result<i64, RepoError> {
        let id = git2::Oid::from_str(&self.resolve(revision)?)?;
        Ok(self.repo.find_commit(id)?.time().seconds())
    }

    /// Fetches every branch and tag (deleted ones are pruned) and says which branches moved.
    ///
    /// The remote's host is resolved and checked at connect time: unless `allow_local_remotes`, a name
    /// that now resolves to a loopback or private address is refused (DNS rebinding).
    pub fn fetch(
        &self,
        credentials: Option<&Credentials>,
        size_limit: Option<u64>,
        allow_local_remotes: bool,
    ) -> Result<Vec<BranchMove>, RepoError> {
        // The download limit bounds one fetch; a mirror already past the limit on disk (grown by many
        // fetches) fetches no more, so it stays within twice the limit and no branch moves unseen.
        if let Some(limit) = size_limit
            && disk_size(&self.path)? > limit
        {
            return Err(RepoError::TooLarge { limit });
        }
        let before = self.branch_heads()?;
        let exceeded = Cell::new(false);
        let mut remote = self.repo.find_remote("origin")?;
        let mut options = fetch_options(size_limit, &exceeded);
        let context = FetchContext::new(allow_local_remotes, credentials, size_limit);
        with_context(&context, || {
            remote.fetch(&[BRANCHES, TAGS], Some(&mut options), None)
        })
        .map_err(|e| {
            context
                .take_failure()
                .unwrap_or_else(|| classify(e, size_limit, exceeded.get()))
        })?;
        drop(options);
        let after = self.branch_heads()?;
        if let Some(default) = self.guess_default_branch(&after) {
            self.repo.set_head(&format!("refs/heads/{default}"))?;
        }
        let mut moves = Vec::new();
        for branch in before
            .keys()
            .chain(after.keys().filter(|b| !before.contains_key(*b)))
        {
            let (old, new) = (before.get(branch).cloned(), after.get(branch).cloned());
            if old != new {
                moves.push(BranchMove {
                    branch: branch.clone(),
                    old,
                    new,
                });
            }
        }
        Ok(moves)
    }

    fn guess_default_branch(&self, heads: &BTreeMap<String, String>) -> Option<String> {
        ["main", "master"]
            .into_iter()
            .find(|b| heads.contains_key(*b))
            .map(str::to_owned)
            .or_else(|| heads.keys().next().cloned())
    }

    /// The branch a unit follows when its repo_unit names none: `main`, `master`, or the first one.
    pub fn default_branch(&self) -> Result<Option<String>, RepoError> {
        Ok(self.guess_default_branch(&self.branch_heads()?))
    }

    fn branch_heads(&self) -> Result<BTreeMap<String, String>, RepoError> {
        Ok(self
            .branches()?
            .into_iter()
            .map(|r| (r.name, r.commit))
            .collect())
    }

    fn refs(&self, prefix: &str) -> Result<Vec<RefInfo>, RepoError> {
        let mut out = Vec::new();
        for reference in self.repo.references_glob(&format!("{prefix}*"))? {
            let reference = reference?;
            let (Ok(name), Ok(commit)) = (reference.name(), reference.peel_to_commit()) else {
                continue;
            };
            out.push(RefInfo {
                name: name.trim_start_matches(prefix).to_owned(),
                commit: commit.id().to_string(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn branches(&self) -> Result<Vec<RefInfo>, RepoError> {
        self.refs("refs/heads/")
    }

    pub fn tags(&self) -> Result<Vec<RefInfo>, RepoError> {
        self.refs("refs/tags/")
    }

    /// The full commit id a branch, tag or (abbreviated) commit names.
    pub fn resolve(&self, revision: &str) -> Result<String, RepoError> {
        if revision.starts_with('-') || revision.contains("..") {
            return Err(RepoError::UnknownRevision(revision.to_owned()));
        }
        let candidates = [
            format!("refs/heads/{revision}"),
            format!("refs/tags/{revision}"),
            revision.to_owned(),
        ];
        for candidate in &candidates {
            let commit = self
                .repo
                .revparse_single(candidate)
                .and_then(|object| object.peel_to_commit());
            if let Ok(commit) = commit {
                return Ok(commit.id().to_string());
            }
        }
        Err(RepoError::UnknownRevision(revision.to_owned()))
    }

    /// Whether `commit` is `head` or one of its ancestors (a commit "on" a branch).
    pub fn contains(&self, head: &str, commit: &str) -> Result<bool, RepoError> {
        let head = git2::Oid::from_str(&self.resolve(head)?)?;
        let commit = git2::Oid::from_str(&self.resolve(commit)?)?;
        Ok(head == commit || self.repo.graph_descendant_of(head, commit)?)
    }

    /// Commits reachable from `revision`, newest first.
    pub fn commits(&self, revision: &str, limit: usize) -> Result<Vec<CommitInfo>, RepoError> {
        let head = git2::Oid::from_str(&self.resolve(revision)?)?;
        let mut walk = self.repo.revwalk()?;
        walk.set_sorting(Sort::TIME)?;
        walk.push(head)?;
        let mut out = Vec::new();
        for oid in walk.take(limit) {
            let commit = self.repo.find_commit(oid?)?;
            out.push(CommitInfo {
                id: commit.id().to_string(),
                summary: commit
                    .summary()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .to_owned(),
                author: commit.author().name().unwrap_or_default().to_owned(),
                time: commit.time().seconds(),
            });
        }
        Ok(out)
    }

    /// The bytes of `file` at `revision`, or `None` when the commit has no such file.
    pub fn read_file(&self, revision: &str, file: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let id = git2::Oid::from_str(&self.resolve(revision)?)?;
        let tree = self.repo.find_commit(id)?.tree()?;
        let Ok(entry) = tree.get_path(Path::new(file)) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Ok(None);
        }
        Ok(Some(self.repo.find_blob(entry.id())?.content().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mirror grown past the size limit on disk (by fetches each under the download limit) is not
    /// fetched again.
    #[test]
    fn a_mirror_over_the_limit_on_disk_fetches_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        repo.blob(&noise).unwrap();
        repo.remote("origin", "https://example.com/never-contacted.git")
            .unwrap();
        let mirror = Mirror::open(dir.path()).unwrap();
        let error = mirror.fetch(None, Some(100_000), false).unwrap_err();
        assert!(
            matches!(error, RepoError::TooLarge { limit: 100_000 }),
            "{error}"
        );
    }
}
