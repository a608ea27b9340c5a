//! `pepeunit backup` and `pepeunit restore`: one archive that holds a whole instance.
//!
//! An archive is a gzip-compressed tar, optionally encrypted with a passphrase (see [`crypt`]), of:
//! - `database/<table>.jsonl`: every table read in ONE read transaction (a repeatable-read snapshot on
//!   PostgreSQL, a WAL snapshot on SQLite), so it is consistent while the server runs and units publish,
//!   in an engine-neutral form (see [`tables`]) that restores into SQLite or PostgreSQL alike;
//! - `secrets.toml`: the instance secrets; the sealed columns of the database are useless without them;
//! - `repositories/...`: the repository mirrors;
//! - `manifest.json`, last: the Pepeunit version, the last schema migration applied, the rows of each
//!   table and the SHA-256 of every other member.
//!
//! A restore unpacks and checks everything (authentication when encrypted, every checksum) before it
//! touches the target; then it writes all rows in one transaction, which also runs the migrations, and
//! only after that commits does it move the repositories and the secrets file into place.

pub mod crypt;
pub mod schedule;
pub mod tables;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use pepeunit_migrations::{Migrator, MigratorTrait};
use sea_orm::{AccessMode, DbBackend, DbErr, IsolationLevel, TransactionTrait};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::db::{self, DbStartError};
use crate::secrets::{self, SecretsError};

/// The archive layout this version writes and reads.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const SECRETS: &str = "secrets.toml";
const REPOSITORIES: &str = "repositories";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// A backup or restore failed; nothing was written to the target when a restore fails.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the archive is damaged: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error(transparent)]
    Start(#[from] DbStartError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("not a usable backup: {0}")]
    Invalid(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error(
        "the archive is encrypted: give its passphrase (PEPEUNIT_BACKUP_PASSPHRASE or --passphrase-file)"
    )]
    PassphraseNeeded,
}

/// What an archive holds, written into it as `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub pepeunit_version: String,
    pub created_at: DateTime<Utc>,
    /// `sqlite` or `postgres`: where the backup was taken (any engine restores it).
    pub database_engine: String,
    /// The last schema migration applied to the database backed up.
    pub migration: String,
    /// Rows per table, in restore order.
    pub tables: Vec<TableRows>,
    /// SHA-256 (hex) of every member but the manifest.
    pub members: BTreeMap<String, String>,
}

/// The number of rows of one table in a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRows {
    pub table: String,
    pub rows: u64,
}

impl Manifest {
    /// The rows of `table` in this backup.
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.rows)
    }
}

/// Writes a backup of the instance `config` describes to `out` (replaced atomically when it exists),
/// encrypted when `passphrase` is given. Safe while the server runs.
pub async fn create(
    config: &Config,
    out: &Path,
    passphrase: Option<&str>,
) -> Result<Manifest, BackupError> {
    let db = db::connect(config).await?;
    let manifest = create_from(&db, config, out, passphrase).await;
    db.close().await.ok();
    manifest
}

/// As [`create`], reading the database through `db` (the server's pool, for scheduled backups).
pub async fn create_from(
    db: &sea_orm::DatabaseConnection,
    config: &Config,
    out: &Path,
    passphrase: Option<&str>,
) -> Result<Manifest, BackupError> {
    let secrets_text = secrets::export(config)?;
    let migration = latest_migration(db).await?;
    let parent = parent_dir(out);
    let staging = tempfile::Builder::new()
        .prefix(".pepeunit-backup-")
        .tempdir_in(&parent)?;
    let engine = db::backend_name(db).to_owned();
    // One read transaction for every table: what a unit had acknowledged when it began is in it, and no
    // row refers to one written later.
    let txn = match db.get_database_backend() {
        DbBackend::Postgres => {
            db.begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?
        }
        _ => db.begin().await?,
    };
    let mut rows = Vec::with_capacity(tables::TABLES.len());
    for table in tables::TABLES {
        let path = staging.path().join(format!("{table}.jsonl"));
        let count = tables::dump(&txn, table, &path).await?;
        rows.push(TableRows {
            table: (*table).to_owned(),
            rows: count,
        });
    }
    txn.rollback().await?;
    fs::write(staging.path().join(SECRETS), secrets_text)?;
    let manifest = Manifest {
        format: FORMAT,
        pepeunit_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: Utc::now(),
        database_engine: engine,
        migration,
        tables: rows,
        members: BTreeMap::new(),
    };
    let out = out.to_path_buf();
    let repositories = config.repositories_dir();
    let passphrase = passphrase.map(|p| p.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || {
        write_archive(
            &out,
            staging.path(),
            &repositories,
            manifest,
            passphrase.as_deref(),
        )
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

/// Restores the archive `input` into the instance `config` describes. Refuses a target that holds data
/// (users, units, a repository, other secrets) unless `force`, which replaces it. The server must not be
/// running on the target.
pub async fn restore(
    config: &Config,
    input: &Path,
    passphrase: Option<&str>,
    force: bool,
) -> Result<Manifest, BackupError> {
    secrets::create_private_dir(&config.data_dir)?;
    let staging = tempfile::Builder::new()
        .prefix(".pepeunit-restore-")
        .tempdir_in(&config.data_dir)?;
    let input_path = input.to_path_buf();
    let staged = staging.path().to_path_buf();
    let passphrase = passphrase.map(|p| p.as_bytes().to_vec());
    let manifest =
        tokio::task::spawn_blocking(move || unpack(&input_path, &staged, passphrase.as_deref()))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;

    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let backup_at = names
        .iter()
        .position(|n| *n == manifest.migration)
        .ok_or_else(|| {
            BackupError::Refused(format!(
                "the backup's schema ({}) is newer than this Pepeunit {}: restore it with Pepeunit {} or later",
                manifest.migration,
                env!("CARGO_PKG_VERSION"),
                manifest.pepeunit_version
            ))
        })?
        + 1;
    let secrets_text = fs::read_to_string(staging.path().join(SECRETS))?;
    secrets::check_import(config, &secrets_text)?;

    let db = db::connect(config).await?;
    if !force {
        let in_use = target_in_use(config, &db, &secrets_text).await?;
        if !in_use.is_empty() {
            return Err(BackupError::Refused(format!(
                "the target is not empty ({}); restore with --force to replace it",
                in_use.join("; ")
            )));
        }
    }

    let txn = db::begin_write(&db).await?;
    let applied = Migrator::get_applied_migrations(&txn).await?.len();
    if applied < backup_at {
        // The backup's rows go into the schema they were read from; later migrations then move them
        // forward exactly as they move a live database.
        Migrator::up(
            &txn,
            Some(u32::try_from(backup_at - applied).unwrap_or(u32::MAX)),
        )
        .await?;
    }
    let in_backup: Vec<&str> = tables::TABLES
        .iter()
        .copied()
        .filter(|t| manifest.rows(t).is_some())
        .collect();
    // The tables that exist now: all of them when the target is at this version's schema, else those of
    // the backup's schema (a backup lists every table of its version).
    let existing: Vec<&str> = if applied.max(backup_at) == names.len() {
        tables::TABLES.to_vec()
    } else {
        in_backup.clone()
    };
    for table in existing.iter().rev() {
        tables::clear(&txn, table).await?;
    }
    for table in &in_backup {
        let path = staging
            .path()
            .join("database")
            .join(format!("{table}.jsonl"));
        let loaded = tables::load(&txn, table, &path).await?;
        let expected = manifest.rows(table).unwrap_or_default();
        if loaded != expected {
            return Err(BackupError::Invalid(format!(
                "{table} holds {loaded} rows, the manifest says {expected}"
            )));
        }
    }
    Migrator::up(&txn, None).await?;
    tables::fix_sequences(&txn).await?;
    txn.commit().await?;
    db.close().await.ok();

    // The files: the database is in, so the repositories move into place and the secrets follow.
    let target = config.repositories_dir();
    let staged_repos = staging.path().join(REPOSITORIES);
    if !staged_repos.exists() {
        fs::create_dir_all(&staged_repos)?;
    }
    let aside = staging.path().join("replaced-repositories");
    if target.exists() {
        fs::rename(&target, &aside)?;
    }
    fs::rename(&staged_repos, &target)?;
    secrets::write_file(config, &secrets_text)?;
    Ok(manifest)
}

/// The last migration applied, when the database is at this version's schema.
async fn latest_migration(db: &sea_orm::DatabaseConnection) -> Result<String, BackupError> {
    if !Migrator::get_pending_migrations_read_only(db)
        .await?
        .is_empty()
    {
        return Err(BackupError::Refused(
            "the database is not at this version's schema: start the server or run `pepeunit migrate` first"
                .into(),
        ));
    }
    Migrator::get_applied_migrations_read_only(db)
        .await?
        .last()
        .map(|m| m.name().to_owned())
        .ok_or_else(|| BackupError::Refused("the database has no schema yet".into()))
}

/// What makes the target hold data, empty when a restore may go ahead without `--force`.
async fn target_in_use(
    config: &Config,
    db: &sea_orm::DatabaseConnection,
    secrets_text: &str,
) -> Result<Vec<String>, BackupError> {
    let mut found = Vec::new();
    let secrets_path = config.secrets_path();
    if secrets_path.exists() && fs::read_to_string(&secrets_path)? != secrets_text {
        found.push(format!("other secrets in {}", secrets_path.display()));
    }
    let repositories = config.repositories_dir();
    if repositories.is_dir() && fs::read_dir(&repositories)?.next().is_some() {
        found.push(format!("repositories in {}", repositories.display()));
    }
    let applied = Migrator::get_applied_migrations_read_only(db).await?.len();
    if applied == Migrator::migrations().len() {
        for table in tables::TABLES {
            // The one settings row is written by the migrations themselves.
            if *table == "instance_settings" {
                continue;
            }
            let rows = tables::count(db, table).await?;
            if rows > 0 {
                found.push(format!("{rows} rows in {table}"));
            }
        }
    } else if applied > 0 {
        found.push("a database with an older schema".into());
    }
    Ok(found)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where the archive's bytes go: a file, through the encryption when asked.
enum Sink {
    Plain(BufWriter<File>),
    Sealed(Box<crypt::Encryptor<BufWriter<File>>>),
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(data),
            Sink::Sealed(w) => w.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Sealed(w) => w.flush(),
        }
    }
}

impl Sink {
    fn finish(self) -> io::Result<File> {
        let writer = match self {
            Sink::Plain(w) => w,
            Sink::Sealed(w) => (*w).finish()?,
        };
        writer.into_inner().map_err(|e| e.into_error())
    }
}

/// Hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn write_archive(
    out: &Path,
    staging: &Path,
    repositories: &Path,
    mut manifest: Manifest,
    passphrase: Option<&[u8]>,
) -> Result<Manifest, BackupError> {
    let name = out
        .file_name()
        .ok_or_else(|| BackupError::Refused(format!("{} is not a file name", out.display())))?;
    let partial = parent_dir(out).join(format!(".{}.partial", name.to_string_lossy()));
    let written = write_members(&partial, staging, repositories, &mut manifest, passphrase)
        .and_then(|()| Ok(fs::rename(&partial, out)?));
    if written.is_err() {
        // A failed backup leaves no half-written archive behind.
        let _ = fs::remove_file(&partial);
    }
    written.map(|()| manifest)
}

fn write_members(
    partial: &Path,
    staging: &Path,
    repositories: &Path,
    manifest: &mut Manifest,
    passphrase: Option<&[u8]>,
) -> Result<(), BackupError> {
    let file = private_file(partial)?;
    let sink = match passphrase {
        Some(p) => Sink::Sealed(Box::new(crypt::Encryptor::new(BufWriter::new(file), p)?)),
        None => Sink::Plain(BufWriter::new(file)),
    };
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        sink,
        flate2::Compression::default(),
    ));
    let mut members = BTreeMap::new();
    for table in tables::TABLES {
        let path = staging.join(format!("{table}.jsonl"));
        append_file(
            &mut tar,
            &format!("database/{table}.jsonl"),
            &path,
            &mut members,
        )?;
    }
    append_file(&mut tar, SECRETS, &staging.join(SECRETS), &mut members)?;
    if repositories.is_dir() {
        append_tree(&mut tar, repositories, REPOSITORIES, &mut members)?;
    }
    manifest.members = members;
    let json = serde_json::to_vec_pretty(&*manifest)?;
    let mut header = member_header(json.len() as u64, tar::EntryType::Regular);
    tar.append_data(&mut header, MANIFEST, json.as_slice())?;
    let file = tar.into_inner()?.finish()?.finish()?;
    file.sync_all()?;
    Ok(())
}

fn private_file(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The archive holds the instance secrets.
        options.mode(0o600);
    }
    options.open(path)
}

fn member_header(size: u64, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o700
    } else {
        0o600
    });
    header.set_mtime(0);
    header
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    path: &Path,
    members: &mut BTreeMap<String, String>,
) -> Result<(), BackupError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = Hashing {
        inner: file.take(size),
        hasher: Sha256::new(),
    };
    let mut header = member_header(size, tar::EntryType::Regular);
    tar.append_data(&mut header, name, &mut reader)?;
    members.insert(name.to_owned(), hex::encode(reader.hasher.finalize()));
    Ok(())
}

fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    name: &str,
    members: &mut BTreeMap<String, String>,
) -> Result<(), BackupError> {
    let mut header = member_header(0, tar::EntryType::Directory);
    tar.append_data(&mut header, format!("{name}/"), io::empty())?;
    let mut entries = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child = format!("{name}/{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            append_tree(tar, &entry.path(), &child, members)?;
        } else if kind.is_file() {
            append_file(tar, &child, &entry.path(), members)?;
        } else {
            tracing::warn!(path = %entry.path().display(), "not a file or directory; left out of the backup");
        }
    }
    Ok(())
}

/// Unpacks the archive into `staging`, checking everything; returns its manifest.
fn unpack(
    input: &Path,
    staging: &Path,
    passphrase: Option<&[u8]>,
) -> Result<Manifest, BackupError> {
    // Reading the archive fails in many ways (gzip, tar headers, the encryption) that all mean damage;
    // only the staging directory's own failures are reported as what they are.
    let damaged = |e: io::Error| match e.kind() {
        io::ErrorKind::PermissionDenied
        | io::ErrorKind::StorageFull
        | io::ErrorKind::ReadOnlyFilesystem => BackupError::Io(e),
        _ => BackupError::Invalid(e.to_string()),
    };
    let mut file = BufReader::new(File::open(input)?);
    let head = file.fill_buf()?;
    let source: Box<dyn Read> = if head.starts_with(crypt::MAGIC) {
        let passphrase = passphrase.ok_or(BackupError::PassphraseNeeded)?;
        Box::new(crypt::Decryptor::new(file, passphrase).map_err(damaged)?)
    } else if head.starts_with(GZIP_MAGIC) {
        Box::new(file)
    } else {
        return Err(BackupError::Invalid(format!(
            "{} is not a Pepeunit backup",
            input.display()
        )));
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(source));
    let mut hashes = BTreeMap::new();
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let path = entry.path().map_err(damaged)?.into_owned();
        let name = member_name(&path)?;
        let dest = staging.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&dest)?,
            tar::EntryType::Regular => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)?;
                }
                if hashes.contains_key(&name) {
                    return Err(BackupError::Invalid(format!("{name} appears twice")));
                }
                let mut out = File::create(&dest)?;
                let mut reader = Hashing {
                    inner: &mut entry,
                    hasher: Sha256::new(),
                };
                io::copy(&mut reader, &mut out).map_err(damaged)?;
                hashes.insert(name, hex::encode(reader.hasher.finalize()));
            }
            other => {
                return Err(BackupError::Invalid(format!(
                    "{name} is a {other:?}, not a file or directory"
                )));
            }
        }
    }
    // The tar ends before the compressed stream does: read to its end so gzip's CRC and the last
    // encrypted chunk are checked too.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(damaged)?;

    hashes
        .remove(MANIFEST)
        .ok_or_else(|| BackupError::Invalid("no manifest.json".into()))?;
    let manifest: Manifest = serde_json::from_reader(File::open(staging.join(MANIFEST))?)?;
    if manifest.format != FORMAT {
        return Err(BackupError::Invalid(format!(
            "archive format {} (this version reads {FORMAT})",
            manifest.format
        )));
    }
    for (name, sum) in &manifest.members {
        match hashes.get(name) {
            Some(found) if found == sum => {}
            Some(_) => return Err(BackupError::Invalid(format!("{name}: checksum mismatch"))),
            None => return Err(BackupError::Invalid(format!("{name} is missing"))),
        }
    }
    if let Some(extra) = hashes.keys().find(|n| !manifest.members.contains_key(*n)) {
        return Err(BackupError::Invalid(format!(
            "{extra} is not in the manifest"
        )));
    }
    for table in &manifest.tables {
        if !manifest
            .members
            .contains_key(&format!("database/{}.jsonl", table.table))
        {
            return Err(BackupError::Invalid(format!("no rows of {}", table.table)));
        }
    }
    if !manifest.members.contains_key(SECRETS) {
        return Err(BackupError::Invalid("no secrets.toml".into()));
    }
    Ok(manifest)
}

/// The member's name with `/` separators; only plain relative paths are accepted.
fn member_name(path: &Path) -> Result<String, BackupError> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(BackupError::Invalid(format!(
                    "member {} escapes the archive",
                    path.display()
                )));
            }
        }
    }
    if parts.is_empty() {
        return Err(BackupError::Invalid("a member has no name".into()));
    }
    Ok(parts.join("/"))
}
