//! repo_units: creating mirrors of firmware repositories, configuring them, reading their contents.
//!
//! Rules from the design: the clone URL never changes after creation (other people's devices may be built
//! from it); a repo_unit cannot be deleted while units use it; credentials are stored encrypted and never
//! returned; non-admins' repositories are limited in size while they download.

use chrono::Utc;
use hmac::{Hmac, Mac};
use pepeunit_protocol::Visibility;
use pepeunit_repositories::{
    CloneUrl, CommitCheck, CommitInfo, Credentials, Mirror, RefInfo, RemotePolicy, RepoError,
    check_commit,
};
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::domain::{InvalidValue, NodeName};
use crate::entities::{repo_units, units};
use crate::error::{Error, Result};
use crate::services::{Actor, Services, access, repo_sync};

/// How credentials are sealed in `credentials_encrypted`.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredCredentials {
    pub username: String,
    pub password: String,
}

/// What a create form sends.
#[derive(Debug, Clone)]
pub struct NewRepoUnit {
    pub name: String,
    pub clone_url: String,
    pub visibility: Visibility,
    pub is_private_repository: bool,
    pub credentials: Option<Credentials>,
    pub default_branch: Option<String>,
    pub sync_period_seconds: Option<i32>,
    pub auto_sync: Option<bool>,
}

/// A partial change; the clone URL is deliberately not part of it.
#[derive(Debug, Clone, Default)]
pub struct RepoUnitChange {
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub default_branch: Option<String>,
    pub sync_period_seconds: Option<i32>,
    pub auto_sync: Option<bool>,
    pub credentials: Option<Credentials>,
}

const MIN_PERIOD: i32 = 60;
const MAX_PERIOD: i32 = 30 * 24 * 3600;

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.into(),
    })
}

fn check_period(period: i32) -> Result<i32> {
    if (MIN_PERIOD..=MAX_PERIOD).contains(&period) {
        Ok(period)
    } else {
        Err(invalid(
            "syncPeriodSeconds",
            format!("must be between {MIN_PERIOD} and {MAX_PERIOD} seconds"),
        ))
    }
}

/// Turns a git failure into what the user can act on, naming the field to fix.
pub(crate) fn remote_error(error: RepoError) -> Error {
    match error {
        RepoError::UrlRefused(message) => invalid("cloneUrl", message),
        RepoError::TooLarge { limit } => invalid(
            "cloneUrl",
            format!(
                "the repository is larger than the limit of {limit} bytes; it was not mirrored"
            ),
        ),
        RepoError::AuthFailed => invalid("credentials", "the remote refused these credentials"),
        RepoError::BundleTooLarge(message) => {
            invalid("bundle", format!("the bundle is too large: {message}"))
        }
        RepoError::UnknownRevision(rev) => {
            invalid("revision", format!("no branch, tag or commit {rev:?}"))
        }
        RepoError::Git(message) => invalid(
            "cloneUrl",
            format!("the remote could not be read: {message}"),
        ),
        RepoError::Io(error) => Error::internal(error),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, RepoError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::internal)?
        .map_err(remote_error)
}

fn seal_credentials(services: &Services, credentials: &Credentials) -> Result<String> {
    let stored = StoredCredentials {
        username: credentials.username.clone(),
        password: credentials.password.clone(),
    };
    let json = serde_json::to_vec(&stored).map_err(Error::internal)?;
    services
        .master_key()
        .encrypt(&json)
        .map_err(Error::internal)
}

/// Creates a repo_unit: checks the URL, clones the remote (within the size limit), then stores the node.
pub async fn create(
    services: &Services,
    actor: &Actor,
    form: NewRepoUnit,
) -> Result<repo_units::Model> {
    let user = actor.require_user()?;
    let name = NodeName::parse(&form.name)?;
    let period = check_period(form.sync_period_seconds.unwrap_or(86_400))?;
    let credentials = match (form.is_private_repository, form.credentials) {
        (true, None) => {
            return Err(invalid(
                "credentials",
                "a private repository needs credentials",
            ));
        }
        (false, Some(_)) => {
            return Err(invalid(
                "credentials",
                "credentials are only for private repositories",
            ));
        }
        (_, credentials) => credentials,
    };
    let policy = RemotePolicy {
        allow_local_remotes: services.repos().allow_local_remotes,
        allow_file_urls: actor.is_admin(),
    };
    let raw_url = form.clone_url.clone();
    let url = blocking(move || CloneUrl::parse(&raw_url, policy)).await?;

    let uuid = Uuid::new_v4();
    let path = services.repos().mirror_path(uuid);
    std::fs::create_dir_all(&services.repos().dir).map_err(Error::internal)?;
    let limit = if actor.is_admin() {
        None
    } else {
        Some(services.repos().size_limit_bytes)
    };
    let (clone_path, clone_url, clone_credentials) =
        (path.clone(), url.clone(), credentials.clone());
    let allow_local = services.repos().allow_local_remotes;
    let default_branch = form.default_branch.clone();
    let default_branch = blocking(move || {
        let mirror = Mirror::clone_into(
            &clone_path,
            &clone_url,
            clone_credentials.as_ref(),
            limit,
            allow_local,
        )?;
        match default_branch {
            Some(branch) => mirror
                .resolve(&format!("refs/heads/{branch}"))
                .map(|_| Some(branch)),
            None => mirror.default_branch(),
        }
    })
    .await
    .inspect_err(|_| {
        // The clone cleans up after itself; a missing default branch is found after it succeeded.
        let _ = std::fs::remove_dir_all(&path);
    })?;

    let mut webhook_secret = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut webhook_secret);
    let now = Utc::now();
    let row = repo_units::ActiveModel {
        uuid: Set(uuid),
        creator_uuid: Set(user.id.as_uuid()),
        name: Set(name.as_str().to_owned()),
        visibility: Set(form.visibility),
        clone_url: Set(url.as_str().to_owned()),
        is_private_repository: Set(form.is_private_repository),
        credentials_encrypted: Set(credentials
            .as_ref()
            .map(|c| seal_credentials(services, c))
            .transpose()?),
        webhook_secret_encrypted: Set(Some(
            services
                .master_key()
                .encrypt(hex::encode(webhook_secret).as_bytes())
                .map_err(Error::internal)?,
        )),
        default_branch: Set(default_branch),
        sync_period_seconds: Set(period),
        auto_sync: Set(form.auto_sync.unwrap_or(true)),
        last_synced_at: Set(Some(now)),
        last_sync_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    match row.insert(services.db()).await {
        Ok(row) => {
            tracing::info!(repo_unit = %row.uuid, creator = %user.id, "repo_unit created");
            Ok(row)
        }
        Err(error) => {
            let _ = std::fs::remove_dir_all(&path);
            Err(error.into())
        }
    }
}

/// One repo_unit the actor may see.
pub async fn get(services: &Services, actor: &Actor, uuid: Uuid) -> Result<repo_units::Model> {
    access::find_visible::<repo_units::Entity>(services.db(), actor, uuid, "repo_unit").await
}

/// The repo_units the actor may see, newest first, optionally only one creator's.
pub async fn list(
    services: &Services,
    actor: &Actor,
    creator: Option<Uuid>,
    offset: u64,
    limit: u64,
) -> Result<Vec<repo_units::Model>> {
    let mut query = access::visible_to(repo_units::Entity::find(), actor);
    if let Some(creator) = creator {
        query = query.filter(repo_units::Column::CreatorUuid.eq(creator));
    }
    Ok(query
        .order_by_desc(repo_units::Column::CreatedAt)
        .offset(offset)
        .limit(Ord::min(limit, 100))
        .all(services.db())
        .await?)
}

/// Changes name, visibility, default branch, sync settings or credentials (creator or admin).
pub async fn update(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    change: RepoUnitChange,
) -> Result<repo_units::Model> {
    let row = get(services, actor, uuid).await?;
    access::ensure_can_edit(actor, row.creator_uuid)?;
    if let Some(branch) = &change.default_branch {
        let path = services.repos().mirror_path(uuid);
        let branch = branch.clone();
        blocking(move || Mirror::open(&path)?.resolve(&format!("refs/heads/{branch}")))
            .await
            .map_err(|_| invalid("defaultBranch", "the mirror has no such branch"))?;
    }
    if change.credentials.is_some() && !row.is_private_repository {
        return Err(invalid(
            "credentials",
            "credentials are only for private repositories",
        ));
    }
    let mut active = row.into_active_model();
    if let Some(name) = change.name {
        active.name = Set(NodeName::parse(&name)?.as_str().to_owned());
    }
    if let Some(visibility) = change.visibility {
        active.visibility = Set(visibility);
    }
    if let Some(branch) = change.default_branch {
        active.default_branch = Set(Some(branch));
    }
    if let Some(period) = change.sync_period_seconds {
        active.sync_period_seconds = Set(check_period(period)?);
    }
    if let Some(auto_sync) = change.auto_sync {
        active.auto_sync = Set(auto_sync);
    }
    if let Some(credentials) = &change.credentials {
        active.credentials_encrypted = Set(Some(seal_credentials(services, credentials)?));
    }
    active.updated_at = Set(Utc::now());
    Ok(active.update(services.db()).await?)
}

/// Deletes a repo_unit and its mirror; refused with `CONFLICT` while units use it.
pub async fn delete(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let row = get(services, actor, uuid).await?;
    access::ensure_can_edit(actor, row.creator_uuid)?;
    let txn = crate::db::begin_write(services.db()).await?;
    let in_use = units::Entity::find()
        .filter(units::Column::RepoUnitUuid.eq(uuid))
        .count(&txn)
        .await?;
    if in_use > 0 {
        return Err(Error::Conflict(format!(
            "{in_use} unit(s) are built from this repo_unit; delete them first"
        )));
    }
    repo_units::Entity::delete_by_id(uuid).exec(&txn).await?;
    txn.commit().await?;
    if let Err(error) = std::fs::remove_dir_all(services.repos().mirror_path(uuid)) {
        tracing::warn!(repo_unit = %uuid, %error, "mirror directory not removed");
    }
    Ok(())
}

/// Fetches the remote now (creator or admin) and returns the node with the outcome.
pub async fn sync_now(services: &Services, actor: &Actor, uuid: Uuid) -> Result<repo_units::Model> {
    let row = get(services, actor, uuid).await?;
    access::ensure_can_edit(actor, row.creator_uuid)?;
    repo_sync::sync(services, uuid).await
}

async fn with_mirror<T: Send + 'static>(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    f: impl FnOnce(&Mirror) -> std::result::Result<T, RepoError> + Send + 'static,
) -> Result<T> {
    get(services, actor, uuid).await?;
    let path = services.repos().mirror_path(uuid);
    blocking(move || f(&Mirror::open(&path)?)).await
}

pub async fn branches(services: &Services, actor: &Actor, uuid: Uuid) -> Result<Vec<RefInfo>> {
    with_mirror(services, actor, uuid, Mirror::branches).await
}

pub async fn tags(services: &Services, actor: &Actor, uuid: Uuid) -> Result<Vec<RefInfo>> {
    with_mirror(services, actor, uuid, Mirror::tags).await
}

pub async fn commits(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    revision: String,
    limit: usize,
) -> Result<Vec<CommitInfo>> {
    with_mirror(services, actor, uuid, move |m| {
        m.commits(&revision, limit.min(200))
    })
    .await
}

/// Whether `revision` can build units, with both example files parsed.
pub async fn check(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    revision: String,
) -> Result<CommitCheck> {
    with_mirror(services, actor, uuid, move |m| check_commit(m, &revision)).await
}

/// The webhook secret, for the creator and admins only.
pub fn webhook_secret(
    services: &Services,
    actor: &Actor,
    row: &repo_units::Model,
) -> Result<Option<String>> {
    if access::ensure_can_edit(actor, row.creator_uuid).is_err() {
        return Ok(None);
    }
    row.webhook_secret_encrypted
        .as_deref()
        .map(|sealed| {
            let bytes = services
                .master_key()
                .decrypt(sealed)
                .map_err(Error::internal)?;
            String::from_utf8(bytes).map_err(Error::internal)
        })
        .transpose()
}

/// How a push notification proves it comes from the forge.
#[derive(Debug, Clone, Copy)]
pub enum WebhookProof<'a> {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    GithubSignature(&'a str),
    /// GitLab: `X-Gitlab-Token: <secret>`.
    GitlabToken(&'a str),
    None,
}

/// Verifies a webhook delivery and, when it is a push, starts a sync (see [`repo_sync::webhook_sync`]).
/// `Ok(None)`: verified, not a push.
pub async fn webhook(
    services: &Services,
    uuid: Uuid,
    proof: WebhookProof<'_>,
    is_push: bool,
    delivery: Option<&str>,
    body: &[u8],
) -> Result<Option<repo_sync::WebhookSync>> {
    let row = repo_units::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("repo_unit"))?;
    let secret = match &row.webhook_secret_encrypted {
        Some(sealed) => services
            .master_key()
            .decrypt(sealed)
            .map_err(Error::internal)?,
        None => return Err(Error::Unauthenticated),
    };
    let verified = match proof {
        WebhookProof::GithubSignature(header) => header
            .strip_prefix("sha256=")
            .and_then(|hex_sig| hex::decode(hex_sig).ok())
            .is_some_and(|signature| {
                Hmac::<Sha256>::new_from_slice(&secret)
                    .map(|mut mac| {
                        mac.update(body);
                        mac.verify_slice(&signature).is_ok()
                    })
                    .unwrap_or(false)
            }),
        WebhookProof::GitlabToken(token) => token.as_bytes().ct_eq(&secret).into(),
        WebhookProof::None => false,
    };
    if !verified {
        tracing::info!(repo_unit = %uuid, "webhook refused: bad signature");
        return Err(Error::Unauthenticated);
    }
    Ok(is_push.then(|| repo_sync::webhook_sync(services, uuid, delivery)))
}

/// Adds the configured standard repositories as public repo_units of `admin`; returns what failed.
pub async fn add_standard(
    services: &Services,
    admin: &Actor,
    urls: &[String],
) -> Vec<(String, Error)> {
    let mut failed = Vec::new();
    for url in urls {
        let name = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(url)
            .trim_end_matches(".git");
        let form = NewRepoUnit {
            name: name.to_owned(),
            clone_url: url.clone(),
            visibility: Visibility::Public,
            is_private_repository: false,
            credentials: None,
            default_branch: None,
            sync_period_seconds: None,
            auto_sync: None,
        };
        if let Err(error) = create(services, admin, form).await {
            failed.push((url.clone(), error));
        }
    }
    failed
}
