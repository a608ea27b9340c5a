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
use flate2::write::ZlibEncoder;
use git2::{ObjectType, Oid, TreeWalkMode, TreeWalkResult};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::{Mirror, RepoError};

/// The archive kinds a bundle comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// Deflated zip at a compression level 0–9.
    Zip {
        level: u32,
    },
    Tar,
    /// A tar compressed as one deflate stream, framed as zlib, raw deflate or gzip.
    CompressedTar(DeflateStream),
}

/// The framing of a compressed stream, chosen the way Python's `zlib.compressobj(wbits=…)` chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Zlib,
    Raw,
    Gzip,
}

/// How a tar is compressed. Devices running the reference client unpack with
/// `zlib.decompressobj(wbits=9)`: a zlib stream whose window is at most 512 bytes, which a default
/// (32 KiB window) stream is not, so the window size is part of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateStream {
    pub framing: Framing,
    pub window_bits: u8,
    pub level: u32,
}

impl DeflateStream {
    /// `wbits` as zlib reads it: 9–15 zlib, -15–-9 raw deflate, 25–31 gzip; `level` -1 (default) or 0–9.
    pub fn parse(wbits: i32, level: i32) -> Result<Self, String> {
        let (framing, bits) = match wbits {
            9..=15 => (Framing::Zlib, wbits),
            -15..=-9 => (Framing::Raw, -wbits),
            25..=31 => (Framing::Gzip, wbits - 16),
            _ => return Err(format!("wbits {wbits} is not in 9..15, -15..-9 or 25..31")),
        };
        let level = match level {
            -1 => 6,
            0..=9 => level,
            _ => return Err(format!("level {level} is not -1 or in 0..9")),
        };
        Ok(Self {
            framing,
            window_bits: u8::try_from(bits).map_err(|e| e.to_string())?,
            level: u32::try_from(level).map_err(|e| e.to_string())?,
        })
    }

    /// A gzip stream (`.tar.gz`) at the best compression.
    pub fn gzip() -> Self {
        Self {
            framing: Framing::Gzip,
            window_bits: 15,
            level: 9,
        }
    }

    fn compressor(&self) -> flate2::Compress {
        let level = Compression::new(self.level);
        match self.framing {
            Framing::Zlib => flate2::Compress::new_with_window_bits(level, true, self.window_bits),
            Framing::Raw => flate2::Compress::new_with_window_bits(level, false, self.window_bits),
            Framing::Gzip => flate2::Compress::new_gzip(level, self.window_bits),
        }
    }
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

/// Writes the bundle of `commit` to `out`.
pub fn write_bundle<W: Write>(
    mirror: &Mirror,
    commit: &str,
    format: ArchiveFormat,
    extra: &[ExtraFile],
    out: W,
) -> Result<(), RepoError> {
    let mtime = mirror.commit_time(commit)?.max(0) as u64;
    match format {
        ArchiveFormat::Tar => {
            let mut builder = tar::Builder::new(out);
            tar_entries(&mut builder, mirror, commit, extra, mtime)?;
            builder.into_inner()?.flush()?;
        }
        ArchiveFormat::CompressedTar(stream) => {
            // ZlibEncoder only drives the `Compress`; the framing is the compressor's own.
            let encoder = ZlibEncoder::new_with_compress(out, stream.compressor());
            let mut builder = tar::Builder::new(encoder);
            tar_entries(&mut builder, mirror, commit, extra, mtime)?;
            builder.into_inner()?.finish()?.flush()?;
        }
        ArchiveFormat::Zip { level } => {
            let mut zip = zip::ZipWriter::new_stream(out);
            let zip_error = |e: zip::result::ZipError| RepoError::Git(format!("zip: {e}"));
            for_each_file(mirror, commit, extra, |entry| {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .compression_level(Some(i64::from(level.min(9))))
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

    #[test]
    fn wbits_follow_zlib() {
        let parsed = |w| DeflateStream::parse(w, 9).map(|s| (s.framing, s.window_bits));
        assert_eq!(parsed(9), Ok((Framing::Zlib, 9)));
        assert_eq!(parsed(-15), Ok((Framing::Raw, 15)));
        assert_eq!(parsed(31), Ok((Framing::Gzip, 15)));
        for bad in [0, 8, 16, -8, 24, 32] {
            assert!(parsed(bad).is_err(), "{bad}");
        }
        assert!(DeflateStream::parse(9, 10).is_err());
        assert_eq!(DeflateStream::parse(9, -1).map(|s| s.level), Ok(6));
    }
}
