//! Bundles of a hostile repository never carry links, escaping paths, `.git`, examples or ignored files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use git2::{ObjectType, Oid, Repository, Signature};
use pepeunit_repositories::{
    ArchiveFormat, BundleLimits, DeflateStream, ExtraFile, Mirror, RepoError, plan_bundle,
    write_bundle,
};

fn blob(repo: &Repository, content: &str) -> Oid {
    repo.blob(content.as_bytes()).unwrap()
}

/// Writes a tree object byte by byte, bypassing libgit2's name checks, as a hostile remote could.
fn raw_tree(repo: &Repository, entries: &[(&str, &str, Oid)]) -> Oid {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|a, b| a.1.cmp(b.1));
    let mut bytes = Vec::new();
    for (mode, name, oid) in sorted {
        bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        bytes.extend_from_slice(oid.as_bytes());
    }
    repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
}

fn hostile_repo(dir: &std::path::Path) -> Mirror {
    let repo = Repository::init_bare(dir).unwrap();
    let examples = raw_tree(&repo, &[("100644", "demo.py", blob(&repo, "demo"))]);
    let secret = raw_tree(&repo, &[("100644", "key.pem", blob(&repo, "KEY"))]);
    let lib = raw_tree(
        &repo,
        &[
            ("100644", "util.py", blob(&repo, "util")),
            ("100644", "debug.log", blob(&repo, "log")),
            ("100644", "..", blob(&repo, "dotdot")),
        ],
    );
    let root = raw_tree(
        &repo,
        &[
            ("100755", "main.py", blob(&repo, "print('hi')")),
            ("100644", ".pepeignore", blob(&repo, "*.log\nsecret/\n")),
            ("100644", "env.json", blob(&repo, "{\"stale\": true}")),
            ("120000", "etc-link", blob(&repo, "/etc")),
            ("120000", "up-link", blob(&repo, "../../..")),
            ("100644", "../escape.txt", blob(&repo, "escape")),
            ("100644", ".git", blob(&repo, "gitfile")),
            ("40000", "examples", examples),
            ("40000", "secret", secret),
            ("40000", "lib", lib),
        ],
    );
    let tree = repo.find_tree(root).unwrap();
    let signature = Signature::now("Test", "test@example.com").unwrap();
    repo.commit(
        Some("refs/heads/main"),
        &signature,
        &signature,
        "hostile",
        &tree,
        &[],
    )
    .unwrap();
    Mirror::open(dir).unwrap()
}

fn list_tar(bytes: &[u8]) -> BTreeMap<String, (String, u32)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().entry_type(), tar::EntryType::Regular);
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            (path, (content, mode))
        })
        .collect()
}

fn expected_paths() -> Vec<&'static str> {
    vec![
        "env.json",
        "lib/util.py",
        "main.py",
        "schema.json",
        ".pepeignore",
    ]
}

fn check(files: &BTreeMap<String, (String, u32)>) {
    let mut paths: Vec<&str> = files.keys().map(String::as_str).collect();
    paths.sort();
    let mut want = expected_paths();
    want.sort();
    assert_eq!(paths, want);
    assert_eq!(
        files["env.json"].0, "{\"fresh\": true}",
        "the generated env.json replaces the repository's"
    );
    assert_eq!(files["main.py"].1 & 0o777, 0o755);
    for path in files.keys() {
        assert!(
            !path.starts_with('/') && !path.split('/').any(|s| s == ".." || s == ".git"),
            "{path}"
        );
    }
}

fn extra() -> Vec<ExtraFile> {
    vec![
        ExtraFile {
            path: "env.json".into(),
            bytes: b"{\"fresh\": true}".to_vec(),
        },
        ExtraFile {
            path: "schema.json".into(),
            bytes: b"{}".to_vec(),
        },
    ]
}

#[test]
fn tar_and_tar_gz_hold_only_safe_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = hostile_repo(dir.path());
    let mut tar = Vec::new();
    write_bundle(
        &mirror,
        "main",
        ArchiveFormat::Tar,
        &extra(),
        BundleLimits::NONE,
        &mut tar,
    )
    .unwrap();
    check(&list_tar(&tar));

    // The reference client's unpacking: zlib.decompressobj(wbits=9), a 512-byte window.
    let device = DeflateStream::parse(9, 9).unwrap();
    let mut zlib = Vec::new();
    write_bundle(
        &mirror,
        "main",
        ArchiveFormat::CompressedTar(device),
        &extra(),
        BundleLimits::NONE,
        &mut zlib,
    )
    .unwrap();
    assert_eq!(zlib[0] >> 4, 1, "CINFO must announce a 512-byte window");
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(zlib.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    check(&list_tar(&raw));

    let mut tgz = Vec::new();
    write_bundle(
        &mirror,
        "main",
        ArchiveFormat::CompressedTar(DeflateStream::gzip()),
        &extra(),
        BundleLimits::NONE,
        &mut tgz,
    )
    .unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(tgz.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    check(&list_tar(&raw));

    let mut deflate = Vec::new();
    let stream = DeflateStream::parse(-15, 1).unwrap();
    write_bundle(
        &mirror,
        "main",
        ArchiveFormat::CompressedTar(stream),
        &extra(),
        BundleLimits::NONE,
        &mut deflate,
    )
    .unwrap();
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(deflate.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    check(&list_tar(&raw));
}

#[test]
fn zip_holds_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = hostile_repo(dir.path());
    let mut bytes = Vec::new();
    write_bundle(
        &mirror,
        "main",
        ArchiveFormat::Zip { level: 6 },
        &extra(),
        BundleLimits::NONE,
        &mut bytes,
    )
    .unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        assert!(file.is_file());
        let name = file.name().unwrap().to_string();
        assert!(file.enclosed_name().is_some(), "{name}");
        let mut content = String::new();
        file.read_to_string(&mut content).unwrap();
        files.insert(name, (content, file.unix_mode().unwrap_or(0)));
    }
    check(&files);
}

/// Bundle amplification: a tiny mirror with one big zero blob referenced many times. Its pack is a few
/// kilobytes, its bundle would be 20 times the blob; the limits refuse it from the object headers, before
/// a byte is written or a blob is loaded.
#[test]
fn a_blob_referenced_many_times_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(dir.path()).unwrap();
    let zeros = repo.blob(&vec![0u8; 4 << 20]).unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("zeros-{i:02}.bin")).collect();
    let entries: Vec<(&str, &str, Oid)> = names
        .iter()
        .map(|n| ("100644", n.as_str(), zeros))
        .collect();
    let root = raw_tree(&repo, &entries);
    let signature = Signature::now("Test", "test@example.com").unwrap();
    repo.commit(
        Some("refs/heads/main"),
        &signature,
        &signature,
        "amplify",
        &repo.find_tree(root).unwrap(),
        &[],
    )
    .unwrap();
    let mirror = Mirror::open(dir.path()).unwrap();

    let limits = BundleLimits {
        max_file_bytes: 8 << 20,
        max_total_bytes: 16 << 20,
    };
    let mut out = Vec::new();
    let error = write_bundle(&mirror, "main", ArchiveFormat::Tar, &[], limits, &mut out)
        .expect_err("80 MiB of files in a 16 MiB bundle");
    assert!(
        matches!(&error, RepoError::BundleTooLarge(m) if m.contains("16777216")),
        "{error}"
    );
    assert!(out.is_empty(), "nothing written");

    let small_files = BundleLimits {
        max_file_bytes: 1 << 20,
        max_total_bytes: u64::MAX,
    };
    let error = plan_bundle(&mirror, "main", &[], small_files).expect_err("a 4 MiB file");
    assert!(
        matches!(&error, RepoError::BundleTooLarge(m) if m.contains("zeros-00.bin is 4194304 bytes")),
        "{error}"
    );

    let roomy = BundleLimits {
        max_file_bytes: 4 << 20,
        max_total_bytes: 80 << 20,
    };
    assert_eq!(
        plan_bundle(&mirror, "main", &[], roomy)
            .unwrap()
            .total_bytes(),
        80 << 20,
        "exactly at the limits is allowed"
    );
}
