//! Firmware bundles: the repository at one commit, as zip, tar or tar.gz, plus generated files.
//!
//! Written entry by entry to any `Write` (the server streams it to the client through a bounded
//! channel), so memory stays bounded by one file. What never reaches an archive: symlinks (they could
//! point anywhere on the device), submodules, `.git` entries, names that are `.`/`..` or carry path
//! separators (a hostile tree), `example`/`examples` folders, and paths matched by the repository's
//! `.pepeignore` (gitignore syntax).

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use git2::{ObjectType, Oid, TreeWalkMode, TreeWalkResult};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::{Mirror, RepoError};

/// The archive kinds a bundle comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Zip,
    Tar,
    TarGz,
}

/// A generated file added at the archive root, replacing any repository file of the same name.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

const IGNORE_FILE: &str = ".pepeignore";
const EXCLUDED_DIRS: [&str; 2] = ["example", "examples"];

struct Entry {
    path: String,
    bytes: Vec<u8>,
    executable: bool,
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.eq_ignore_ascii_case(".git")
}

fn ignore_rules(mirror: &Mirror, commit: &str) -> Result<Gitignore, RepoError> {
    let mut builder = GitignoreBuilder::new("/");
    if let Some(bytes) = mirror.read_file(commit, IGNORE_FILE)? {
        for line in String::from_utf8_lossy(&bytes).lines() {
            // A malformed pattern is skipped, not fatal: the rest of the file still applies.
            let _ = builder.add_line(None, line);
        }
    }
    builder
        .build()
        .map_err(|e| RepoError::Git(format!("{IGNORE_FILE}: {e}")))
}

/// Calls `visit` for every file that belongs in the bundle, in tree order.
fn for_each_file(
    mirror: &Mirror,
    commit: &str,
    extra: &[ExtraFile],
    mut visit: impl FnMut(Entry) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    let repo = mirror.repository();
    let id = Oid::from_str(&mirror.resolve(commit)?)?;
    let tree = repo.find_commit(id)?.tree()?;
    let rules = ignore_rules(mirror, commit)?;
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        let Some(name) = entry.name().ok().filter(|n| safe_name(n)) else {
            tracing::warn!(?parent, "bundle: unsafe entry name skipped");
            return TreeWalkResult::Skip;
        };
        if !parent.split('/').filter(|s| !s.is_empty()).all(safe_name) {
            return TreeWalkResult::Skip;
        }
        let path = format!("{parent}{name}");
        let is_dir = entry.kind() == Some(ObjectType::Tree);
        if is_dir && EXCLUDED_DIRS.contains(&name.to_ascii_lowercase().as_str()) {
            return TreeWalkResult::Skip;
        }
        if rules
            .matched_path_or_any_parents(Path::new(&path), is_dir)
            .is_ignore()
        {
            return TreeWalkResult::Skip;
        }
        let mode = entry.filemode();
        // Only regular files (0o100644 / 0o100755): links (0o120000) and submodules (0o160000) stay out.
        if is_dir
            || entry.kind() != Some(ObjectType::Blob)
            || (mode != 0o100644 && mode != 0o100755)
        {
            return TreeWalkResult::Ok;
        }
        if parent.is_empty() && extra.iter().any(|e| e.path == name) {
            return TreeWalkResult::Ok;
        }
        let result = repo
            .find_blob(entry.id())
            .map_err(RepoError::from)
            .and_then(|blob| {
                visit(Entry {
                    path,
                    bytes: blob.content().to_vec(),
                    executable: mode == 0o100755,
                })
            });
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(error) => {
                failure = Some(error);
                TreeWalkResult::Abort
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    for file in extra {
        visit(Entry {
            path: file.path.clone(),
            bytes: file.bytes.clone(),
            executable: false,
        })?;
    }
    Ok(())
}

fn tar_entries<W: Write>(
    builder: &mut tar::Builder<W>,
    mirror: &Mirror,
    commit: &str,
    extra: &[ExtraFile],
    mtime: u64,
) -> Result<(), RepoError> {
    for_each_file(mirror, commit, extra, |entry| {
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.bytes.len() as u64);
        header.set_mode(if entry.executable { 0o755 } else { 0o644 });
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &entry.path, entry.bytes.as_slice())?;
        Ok(())
    })
}

/// Writes the bundle of `commit` to `out`. `level` is the compression level, 0–9.
pub fn write_bundle<W: Write>(
    mirror: &Mirror,
    commit: &str,
    format: ArchiveFormat,
    level: u32,
    extra: &[ExtraFile],
    out: W,
) -> Result<(), RepoError> {
    let level = level.min(9);
    let mtime = mirror.commit_time(commit)?.max(0) as u64;
    match format {
        ArchiveFormat::Tar => {
            let mut builder = tar::Builder::new(out);
            tar_entries(&mut builder, mirror, commit, extra, mtime)?;
            builder.into_inner()?.flush()?;
        }
        ArchiveFormat::TarGz => {
            let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::new(level)));
            tar_entries(&mut builder, mirror, commit, extra, mtime)?;
            builder.into_inner()?.finish()?.flush()?;
        }
        ArchiveFormat::Zip => {
            let mut zip = zip::ZipWriter::new_stream(out);
            let zip_error = |e: zip::result::ZipError| RepoError::Git(format!("zip: {e}"));
            for_each_file(mirror, commit, extra, |entry| {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .compression_level(Some(i64::from(level)))
                    .unix_permissions(if entry.executable { 0o755 } else { 0o644 });
                zip.start_file(entry.path.as_str(), options)
                    .map_err(zip_error)?;
                zip.write_all(&entry.bytes)?;
                Ok(())
            })?;
            zip.finish().map_err(zip_error)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_recognised() {
        for bad in ["", ".", "..", "a/b", "a\\b", ".git", ".GIT", "x\0y"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        for good in ["main.py", ".gitignore", "..hidden", "lib"] {
            assert!(safe_name(good), "{good:?}");
        }
    }
}
