//! Writes that survive power loss: a file or a symlink is either the old one or the new one, never half.
//!
//! Each write goes to a temporary name, is flushed to disk, renamed over the target, and the directory is
//! flushed so the rename itself is on disk before the caller moves on.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

fn temporary(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Flushes a directory's entries (new, renamed and removed names) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary(path);
    let mut file = File::create(&tmp).at(&tmp)?;
    file.write_all(bytes).at(&tmp)?;
    file.sync_all().at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    sync_dir(parent(path))
}

/// Points the symlink `link` at `target` atomically and durably.
pub fn symlink(target: &Path, link: &Path) -> Result<()> {
    let tmp = temporary(link);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&tmp),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp).at(&tmp)?;
    fs::rename(&tmp, link).at(link)?;
    sync_dir(parent(link))
}

/// Flushes every file and directory under `root` (an unpacked slot) to disk.
pub fn sync_tree(root: &Path) -> Result<()> {
    for entry in fs::read_dir(root).at(root)? {
        let entry = entry.at(root)?;
        let path = entry.path();
        let kind = entry.file_type().at(&path)?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path).and_then(|f| f.sync_all()).at(&path)?;
        }
    }
    sync_dir(root)
}

/// Removes `path` (file or directory tree) if it exists.
pub fn remove(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlink_switches() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        symlink(Path::new("slots/a"), &link).unwrap();
        symlink(Path::new("slots/b"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("slots/b"));
    }
}
