//! A unit's firmware bundle, generated on each download and streamed.
//!
//! The archive is written on a blocking thread into a bounded channel of chunks, so a slow client holds
//! at most a few chunks in memory however large the repository is, and a client that goes away stops the
//! writer at its next chunk.

use std::collections::HashMap;
use std::io::Write;

use std::sync::Arc;
use std::time::Duration;

use pepeunit_repositories::{
    ArchiveFormat, BundleLimits, DeflateStream, ExtraFile, Mirror, RepoError, plan_bundle,
    write_bundle, write_planned,
};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::entities::units;
use crate::error::{Error, Result};
use crate::services::Services;
use crate::services::units::{env::StoredEnv, schema_json};

const CHUNK: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// What bundles may hold and how many are built at once: each build holds at most one blob (up to
/// `bundle_max_file_bytes`) in memory, so memory stays bounded by the two together.
pub struct BundleBuilds {
    limits: BundleLimits,
    permits: Arc<Semaphore>,
    /// How long a download waits for a build slot before it is refused (`bundle_wait_seconds`).
    wait: Duration,
}

impl BundleBuilds {
    pub fn new(limits: BundleLimits, concurrency: usize, wait: Duration) -> Self {
        Self {
            limits,
            permits: Arc::new(Semaphore::new(concurrency)),
            wait,
        }
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit> {
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                tracing::warn!("bundle refused: every build slot stayed busy");
                Err(Error::Unavailable(
                    "too many firmware bundles are being built; retry in a minute".into(),
                ))
            }
        }
    }
}

/// A bundle on its way: the file name to offer and the chunks as they are written.
pub struct BundleStream {
    pub file_name: String,
    pub content_type: &'static str,
    pub chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

/// Forwards writes to the channel in chunks; fails once the receiver is gone.
struct ChannelWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<std::io::Result<Vec<u8>>>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// How long a download link from the web app stays valid.
const LINK_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// A download URL (relative to the instance) for the unit's creator, valid for a few minutes; `kind` is
/// `zip`, `tar` or `tgz` (gzip, the usual `.tar.gz`).
pub async fn download_link(
    services: &Services,
    actor: &crate::services::Actor,
    uuid: uuid::Uuid,
    kind: &str,
) -> Result<String> {
    // Same audience as env.json: the bundle carries it.
    super::env::creators_unit(services, actor, uuid).await?;
    let token = services.tokens().issue_download(uuid, LINK_TTL)?;
    let query = match kind {
        "tgz" => "wbits=31&level=9&",
        _ => "",
    };
    Ok(format!(
        "{}{}/units/firmware/{kind}/{uuid}?{query}download_token={token}",
        services.units().endpoint.app_prefix,
        super::env::API_PREFIX,
    ))
}

fn pretty(value: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(Error::internal)
}

/// What a bundle of `unit` is made of: its mirror, its target commit and the generated files.
struct Contents {
    mirror: std::path::PathBuf,
    commit: String,
    extra: Vec<ExtraFile>,
}

async fn contents(services: &Services, unit: &units::Model) -> Result<Contents> {
    let env = StoredEnv::open(services, unit)?.render(services, unit);
    let schema = schema_json::render(services, unit).await?;
    let extra = vec![
        ExtraFile {
            path: "env.json".into(),
            bytes: pretty(&env)?,
        },
        ExtraFile {
            path: "schema.json".into(),
            bytes: pretty(&schema)?,
        },
    ];
    let commit = unit
        .target_commit
        .clone()
        .ok_or_else(|| Error::internal("unit without a target commit"))?;
    Ok(Contents {
        mirror: services.repos().mirror_path(unit.repo_unit_uuid),
        commit,
        extra,
    })
}

/// The archive format devices download by default (`firmware/tgz` without parameters): a zlib stream
/// with a 512-byte window at level 9, what the reference client unpacks.
pub fn device_default_format() -> ArchiveFormat {
    match DeflateStream::parse(9, 9) {
        Ok(stream) => ArchiveFormat::CompressedTar(stream),
        // parse(9, 9) is valid zlib; a plain tar keeps this total rather than panicking.
        Err(_) => ArchiveFormat::Tar,
    }
}

/// How many (repo_unit, commit) hashes are kept; the whole map is dropped when it fills, since only
/// the few commits being rolled out at a time are ever asked for.
const HASHES_KEPT: usize = 256;

/// Firmware hashes by repo_unit and commit: a commit's tree never changes, so neither does its hash.
#[derive(Default)]
pub struct FirmwareHashes(std::sync::Mutex<HashMap<(uuid::Uuid, String), String>>);

impl FirmwareHashes {
    fn get(&self, key: &(uuid::Uuid, String)) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn put(&self, key: (uuid::Uuid, String), hash: String) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= HASHES_KEPT {
            map.clear();
        }
        map.insert(key, hash);
    }
}

/// SHA-256 (hex) of the firmware `unit` downloads with `unit_files=false` in the default format: the
/// repo at its target commit, without the generated env.json and schema.json (the device fetches those
/// on their own endpoints). Sent with the update command so the device can refuse a corrupted or
/// substituted archive. It depends only on the commit, so one computation serves a whole fleet, and
/// editing a unit's env does not invalidate an update on its way.
pub async fn firmware_sha256(services: &Services, unit: &units::Model) -> Result<String> {
    let commit = unit
        .target_commit
        .clone()
        .ok_or_else(|| Error::internal("unit without a target commit"))?;
    let key = (unit.repo_unit_uuid, commit.clone());
    if let Some(hash) = services.firmware_hashes().get(&key) {
        return Ok(hash);
    }
    let mirror = services.repos().mirror_path(unit.repo_unit_uuid);
    let builds = services.bundle_builds();
    let limits = builds.limits;
    let permit = builds.permit().await?;
    let hash = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut hasher = HashWriter(Sha256::new());
        Mirror::open(&mirror)
            .and_then(|mirror| {
                write_bundle(
                    &mirror,
                    &commit,
                    device_default_format(),
                    &[],
                    limits,
                    &mut hasher,
                )
            })
            .map(|()| hex::encode(hasher.0.finalize()))
    })
    .await
    .map_err(Error::internal)?
    .map_err(bundle_error)?;
    services.firmware_hashes().put(key, hash.clone());
    Ok(hash)
}

fn bundle_error(error: RepoError) -> Error {
    match error {
        RepoError::BundleTooLarge(_) => {
            tracing::warn!(%error, "bundle refused");
            crate::services::repo_units::remote_error(error)
        }
        other => Error::internal(other),
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts writing the bundle of `unit`; the caller has already decided the caller may have it.
/// With `unit_files` false the archive holds the firmware only, as hashed by [`firmware_sha256`].
pub async fn stream(
    services: &Services,
    unit: &units::Model,
    format: ArchiveFormat,
    unit_files: bool,
) -> Result<BundleStream> {
    let Contents {
        mirror: path,
        commit,
        mut extra,
    } = contents(services, unit).await?;
    if !unit_files {
        extra.clear();
    }
    let builds = services.bundle_builds();
    let limits = builds.limits;
    let permit = builds.permit().await?;
    // Planned (and refused if too large) before the response starts, so the client gets a clear error
    // rather than a broken download.
    let (path, plan) = tokio::task::spawn_blocking(move || {
        let plan = plan_bundle(&Mirror::open(&path)?, &commit, &extra, limits)?;
        Ok::<_, RepoError>((path, plan))
    })
    .await
    .map_err(Error::internal)?
    .map_err(bundle_error)?;
    let (sender, chunks) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let unit_uuid = unit.uuid;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut writer = ChannelWriter {
            buffer: Vec::with_capacity(CHUNK),
            sender: sender.clone(),
        };
        let result = Mirror::open(&path)
            .and_then(|mirror| write_planned(&mirror, &plan, format, &mut writer))
            .and_then(|()| writer.flush().map_err(RepoError::from));
        if let Err(error) = result {
            tracing::warn!(unit = %unit_uuid, %error, "bundle aborted");
            // Ends the body with an error so the client sees a broken download, not a short archive.
            let _ = sender.blocking_send(Err(std::io::Error::other("bundle failed")));
        }
    });
    let (extension, content_type) = match format {
        ArchiveFormat::Zip { .. } => ("zip", "application/zip"),
        ArchiveFormat::Tar => ("tar", "application/x-tar"),
        ArchiveFormat::CompressedTar(stream) => match stream.framing {
            pepeunit_repositories::Framing::Gzip => ("tar.gz", "application/gzip"),
            _ => ("tgz", "application/octet-stream"),
        },
    };
    Ok(BundleStream {
        file_name: format!("{}.{extension}", unit.name),
        content_type,
        chunks,
    })
}
