//! Firmware bundles: the repository at one commit, as zip, tar or tar.gz, plus generated files.
//!
//! Planned first ([`plan_bundle`]: which files, and their sizes from the object headers, checked against
//! [`BundleLimits`]), then written entry by entry to any `Write` (the server streams it to the client
//! through a bounded channel), one blob in memory at a time. What never reaches an archive: symlinks (they could
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

struct Entry<'a> {
    path: &'a str,
    bytes: &'a [u8],
    executable: bool,
}

/// How much one bundle may hold, uncompressed. A tiny mirror can hold a huge blob (zeros compress to
/// nothing) referenced many times, so the limits count blob sizes, not the size of the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// The largest file a bundle may carry.
    pub max_file_bytes: u64,
    /// The sum of every file in the bundle.
    pub max_total_bytes: u64,
}

impl BundleLimits {
    /// No limit, for tests and tools.
    pub const NONE: Self = Self {
        max_file_bytes: u64::MAX,
        max_total_bytes: u64::MAX,
    };
}

/// One repository file on its way into a bundle.
#[derive(Debug, Clone)]
struct PlannedFile {
    path: String,
    id: Oid,
    executable: bool,
}

/// What a bundle of one commit will hold, checked against [`BundleLimits`] before any byte is written.
#[derive(Debug, Clone)]
pub struct BundlePlan {
    mtime: u64,
    files: Vec<PlannedFile>,
    extra: Vec<ExtraFile>,
    total_bytes: u64,
}

impl BundlePlan {
    /// The uncompressed size of every file in the bundle.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
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

/// Lists every file that belongs in the bundle of `commit`, in tree order, with sizes read from the object
/// headers (no blob is loaded), and refuses a bundle beyond `limits`.
pub fn plan_bundle(
    mirror: &Mirror,
    commit: &str,
    extra: &[ExtraFile],
    limits: BundleLimits,
) -> Result<BundlePlan, RepoError> {
    let repo = mirror.repository();
    let commit = mirror.resolve(commit)?;
    let id = Oid::from_str(&commit)?;
    let tree = repo.find_commit(id)?.tree()?;
    let mtime = mirror.commit_time(&commit)?.max(0) as u64;
    let rules = ignore_rules(mirror, &commit)?;
    let odb = repo.odb()?;
    let mut files = Vec::new();
    let mut total: u64 = extra.iter().map(|e| e.bytes.len() as u64).sum();
    let mut failure = None;
    let walked = tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
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
        let size = match odb.read_header(entry.id()) {
            Ok((size, _)) => size as u64,
            Err(error) => {
                failure = Some(RepoError::from(error));
                return TreeWalkResult::Abort;
            }
        };
        if size > limits.max_file_bytes {
            failure = Some(RepoError::BundleTooLarge(format!(
                "{path} is {size} bytes; a bundle file may have at most {} bytes",
                limits.max_file_bytes
            )));
            return TreeWalkResult::Abort;
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            failure = Some(RepoError::BundleTooLarge(format!(
                "the files add up to more than {} bytes, the most a bundle may hold",
                limits.max_total_bytes
            )));
            return TreeWalkResult::Abort;
        }
        files.push(PlannedFile {
            path,
            id: entry.id(),
            executable: mode == 0o100755,
        });
        TreeWalkResult::Ok
    });
    // An abort makes the walk fail too, with a stale libgit2 message: the recorded cause comes first.
    if let Some(error) = failure {
        return Err(error);
    }
    walked?;
    Ok(BundlePlan {
        mtime,
        files,
        extra: extra.to_vec(),
        total_bytes: total,
    })
}

/// Calls `visit` for every file of `plan`, loading one blob at a time.
fn for_each_file(
    mirror: &Mirror,
    plan: &BundlePlan,
    mut visit: impl FnMut(Entry<'_>) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    let repo = mirror.repository();
    for file in &plan.files {
        let blob = repo.find_blob(file.id)?;
        visit(Entry {
            path: &file.path,
            bytes: blob.content(),
            executable: file.executable,
        })?;
    }
    for file in &plan.extra {
        visit(Entry {
            path: &file.path,
            bytes: &file.bytes,
            executable: false,
        })?;
    }
    Ok(())
}

fn tar_entries<W: Write>(
    builder: &mut tar::Builder<W>,
    mirror: &Mirror,
    plan: &BundlePlan,
) -> Result<(), RepoError> {
    let mtime = plan.mtime;
    for_each_file(mirror, plan, |entry| {
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.bytes.len() as u64);
        header.set_mode(if entry.executable { 0o755 } else { 0o644 });
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, entry.path, entry.bytes)?;
        Ok(())
    })
}

/// Writes the bundle of `commit` to `out`, if it fits `limits` (checked before anything is written).
pub fn write_bundle<W: Write>(
    mirror: &Mirror,
    commit: &str,
    format: ArchiveFormat,
    extra: &[ExtraFile],
    limits: BundleLimits,
    out: W,
) -> Result<(), RepoError> {
    let plan = plan_bundle(mirror, commit, extra, limits)?;
    write_planned(mirror, &plan, format, out)
}

/// Writes a bundle planned by [`plan_bundle`] to `out`.
pub fn write_planned<W: Write>(
    mirror: &Mirror,
    plan: &BundlePlan,
    format: ArchiveFormat,
    out: W,
) -> Result<(), RepoError> {
    match format {
        ArchiveFormat::Tar => {
            let mut builder = tar::Builder::new(out);
            tar_entries(&mut builder, mirror, plan)?;
            builder.into_inner()?.flush()?;
        }
        ArchiveFormat::CompressedTar(stream) => {
            // ZlibEncoder only drives the `Compress`; the framing is the compressor's own.
            let encoder = ZlibEncoder::new_with_compress(out, stream.compressor());
            let mut builder = tar::Builder::new(encoder);
            tar_entries(&mut builder, mirror, plan)?;
            builder.into_inner()?.finish()?.flush()?;
        }
        ArchiveFormat::Zip { level } => {
            let mut zip = zip::ZipWriter::new_stream(out);
            let zip_error = |e: zip::result::ZipError| RepoError::Git(format!("zip: {e}"));
            for_each_file(mirror, plan, |entry| {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .compression_level(Some(i64::from(level.min(9))))
                    .unix_permissions(if entry.executable { 0o755 } else { 0o644 });
                zip.start_file(entry.path, options).map_err(zip_error)?;
                zip.write_all(entry.bytes)?;
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
