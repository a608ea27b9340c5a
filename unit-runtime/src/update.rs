//! Over-the-air updates: fetch the archive, check it against the hash the server announced, unpack it
//! into the inactive slot and start a trial (see [`crate::slots`] for what makes each step safe).

use std::io::Read;
use std::path::Path;

use flate2::read::{GzDecoder, ZlibDecoder};

use crate::api::Api;
use crate::error::{Error, IoContext, Result};
use crate::failpoint;
use crate::home::Home;
use crate::slots::{Slot, Slots};

/// Largest archive the agent unpacks, against a hostile or broken server filling the disk.
const MAX_UNPACKED: u64 = 1 << 30;

/// A verified archive in the agent's home, ready to unpack, and the unit's files to put beside it.
pub struct Fetched {
    pub sha256: String,
    pub env: Vec<u8>,
    pub schema: Vec<u8>,
}

/// Downloads the unit's firmware and checks its SHA-256 against `expected` (when the server sent one),
/// then fetches the unit's env.json and schema.json as they are now. On a mismatch the download is
/// deleted and nothing else changes.
pub async fn fetch(api: &Api, home: &Home, expected: Option<&str>) -> Result<Fetched> {
    let path = home.download_file();
    let sha256 = api.download_firmware(&path).await?;
    failpoint::hit("update.downloaded");
    if let Some(expected) = expected
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        crate::durable::remove(&path)?;
        return Err(Error::Checksum {
            expected: expected.to_owned(),
            actual: sha256,
        });
    }
    let (env, _) = api.env().await?;
    let (schema, _) = api.schema().await?;
    Ok(Fetched {
        sha256,
        env,
        schema,
    })
}

/// Unpacks the fetched archive with the unit's files into `slot`, then removes the download.
pub async fn install(home: &Home, slots: &Slots, slot: Slot, fetched: &Fetched) -> Result<()> {
    let archive = home.download_file();
    let target = slots.dir(slot);
    let files = [
        ("env.json", fetched.env.as_slice()),
        ("schema.json", fetched.schema.as_slice()),
    ];
    let result = tokio::task::block_in_place(|| slots.unpack(slot, &archive, &files));
    crate::durable::remove(&archive)?;
    result?;
    failpoint::hit("update.unpacked");
    tracing::debug!(slot = %target.display(), "firmware unpacked");
    Ok(())
}

/// Unpacks a tar archive, bare or in a zlib, gzip or raw deflate stream, into `into`. Entries that would
/// land outside `into` (absolute paths, `..`, links) are refused.
pub fn unpack(archive: &Path, into: &Path) -> Result<()> {
    let bytes = std::fs::read(archive).at(archive)?;
    let reader: Box<dyn Read> = match bytes.as_slice() {
        [0x1f, 0x8b, ..] => Box::new(GzDecoder::new(bytes.as_slice())),
        // A zlib header: CMF says deflate, and CMF*256+FLG is a multiple of 31.
        [cmf, flg, ..]
            if cmf & 0x0f == 8 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0 =>
        {
            Box::new(ZlibDecoder::new(bytes.as_slice()))
        }
        _ if bytes.len() > 262 && &bytes[257..262] == b"ustar" => Box::new(bytes.as_slice()),
        _ => Box::new(flate2::read::DeflateDecoder::new(bytes.as_slice())),
    };
    let mut tar = tar::Archive::new(reader.take(MAX_UNPACKED));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    let entries = tar
        .entries()
        .map_err(|e| Error::Archive(format!("not a tar archive: {e}")))?;
    let mut count = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Archive(e.to_string()))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(Error::Archive(format!(
                "entry {:?} is not a file or directory",
                entry.path().unwrap_or_default()
            )));
        }
        // unpack_in refuses paths that escape `into` and returns false for them.
        if !entry
            .unpack_in(into)
            .map_err(|e| Error::Archive(e.to_string()))?
        {
            return Err(Error::Archive("an entry points outside the archive".into()));
        }
        count += 1;
    }
    if count == 0 {
        return Err(Error::Archive("the archive is empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use std::io::Write;

    fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpacks_every_framing() {
        let tar = tar_bytes(&[("main.py", b"print(1)"), ("lib/x.py", b"")]);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::best());
        zlib.write_all(&tar).unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        gzip.write_all(&tar).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
        raw.write_all(&tar).unwrap();
        for archive in [
            tar.clone(),
            zlib.finish().unwrap(),
            gzip.finish().unwrap(),
            raw.finish().unwrap(),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("a");
            std::fs::write(&file, archive).unwrap();
            let out = dir.path().join("out");
            std::fs::create_dir(&out).unwrap();
            unpack(&file, &out).unwrap();
            assert_eq!(std::fs::read(out.join("main.py")).unwrap(), b"print(1)");
            assert!(out.join("lib/x.py").exists());
        }
    }

    #[test]
    fn refuses_garbage_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, b"definitely not an archive").unwrap();
        assert!(unpack(&file, dir.path()).is_err());

        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil\0\0");
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b"x"[..]).unwrap();
        std::fs::write(&file, builder.into_inner().unwrap()).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert!(unpack(&file, &out).is_err());
        assert!(!dir.path().join("evil").exists());
    }
}
