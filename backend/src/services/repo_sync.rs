//! Keeping mirrors in step with their remotes: on demand, by webhook, and on each repo_unit's period.
//!
//! Syncs run on blocking threads, at most `sync_concurrency` at once, one at a time per repo_unit, so API
//! requests never wait on git. A failing remote is retried with exponential backoff (one minute, doubling,
//! capped at its sync period) and its last error is kept on the node. A sync that moves a branch publishes a
//! [`RepoEvent`] that units following the branch react to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use pepeunit_protocol::RepoUnitId;
use pepeunit_repositories::{BranchMove, CloneUrl, Credentials, Mirror, RepoError};
use rand::Rng;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use tokio::sync::{Semaphore, broadcast};
use uuid::Uuid;

use crate::domain::UserRole;
use crate::entities::{repo_units, users};
use crate::error::{Error, Result};
use crate::services::Services;

/// Something that happened to a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoEvent {
    /// A sync found a branch at a new commit (or a new branch).
    BranchMoved {
        repo_unit: RepoUnitId,
        branch: String,
        old: Option<String>,
        new: String,
    },
}

/// Webhook-triggered syncs of one repo_unit start at most this often; deliveries in between fold into
/// the one already scheduled (it fetches everything they announced).
pub const WEBHOOK_SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Delivery ids remembered to refuse replays; the oldest are forgotten first.
const DELIVERIES_KEPT: usize = 4096;

/// What a verified push delivery led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSync {
    /// A sync starts now or at the end of the current interval.
    Scheduled,
    /// A sync is already scheduled and will fetch this push too.
    Folded,
    /// This delivery id was seen before: a replay or a redelivery, nothing to do.
    Replayed,
}

#[derive(Default)]
struct Webhooks {
    /// When the latest webhook-triggered sync of each repo_unit starts (or started).
    starts: HashMap<Uuid, Instant>,
    seen: std::collections::HashSet<(Uuid, String)>,
    order: std::collections::VecDeque<(Uuid, String)>,
}

/// Shared sync state.
pub struct RepoSync {
    webhooks: Mutex<Webhooks>,
    events: broadcast::Sender<RepoEvent>,
    permits: Semaphore,
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    failures: Mutex<HashMap<Uuid, (u32, Instant)>>,
    running: std::sync::atomic::AtomicUsize,
}

impl RepoSync {
    pub fn new(concurrency: usize) -> Self {
        Self {
            webhooks: Mutex::new(Webhooks::default()),
            events: broadcast::channel(1024).0,
            permits: Semaphore::new(concurrency),
            locks: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            running: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Receives every [`RepoEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RepoEvent> {
        self.events.subscribe()
    }

    /// Syncs under way right now.
    pub fn running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Decides what a verified push delivery does: replays (same delivery id) nothing, and a repo_unit
    /// syncs at most once per [`WEBHOOK_SYNC_INTERVAL`] however many deliveries arrive. Returns the delay
    /// before the sync to start, if one is to start.
    fn admit_webhook(
        &self,
        uuid: Uuid,
        delivery: Option<&str>,
        now: Instant,
    ) -> (WebhookSync, Option<Duration>) {
        let mut hooks = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = delivery {
            let key = (uuid, id.to_owned());
            if hooks.seen.contains(&key) {
                return (WebhookSync::Replayed, None);
            }
            if hooks.order.len() >= DELIVERIES_KEPT
                && let Some(oldest) = hooks.order.pop_front()
            {
                hooks.seen.remove(&oldest);
            }
            hooks.seen.insert(key.clone());
            hooks.order.push_back(key);
        }
        let start = match hooks.starts.get(&uuid) {
            Some(&scheduled) if scheduled > now => return (WebhookSync::Folded, None),
            Some(&last) => (last + WEBHOOK_SYNC_INTERVAL).max(now),
            None => now,
        };
        hooks.starts.insert(uuid, start);
        (WebhookSync::Scheduled, Some(start - now))
    }

    fn lock_for(&self, uuid: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(uuid).or_default().clone()
    }

    /// Whether a repo_unit that failed last time may be tried again now.
    fn backoff_over(&self, uuid: Uuid, period: Duration) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&uuid) {
            None => true,
            Some((count, at)) => {
                let wait = Duration::from_secs(60).saturating_mul(1 << (*count - 1).min(16));
                at.elapsed() >= wait.min(period)
            }
        }
    }

    fn record(&self, uuid: Uuid, ok: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            failures.remove(&uuid);
        } else {
            let entry = failures.entry(uuid).or_insert((0, Instant::now()));
            *entry = (entry.0.saturating_add(1), Instant::now());
        }
    }
}

struct RunningGuard<'a>(&'a RepoSync);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The credentials of a repo_unit, decrypted.
pub(crate) fn credentials_of(
    services: &Services,
    row: &repo_units::Model,
) -> Result<Option<Credentials>> {
    let Some(sealed) = &row.credentials_encrypted else {
        return Ok(None);
    };
    let bytes = services
        .master_key()
        .decrypt(sealed)
        .map_err(Error::internal)?;
    let stored: super::repo_units::StoredCredentials =
        serde_json::from_slice(&bytes).map_err(Error::internal)?;
    Ok(Some(Credentials {
        username: stored.username,
        password: stored.password,
    }))
}

/// The size limit for repositories of `creator`: none for admins.
pub(crate) async fn size_limit_for(services: &Services, creator: Uuid) -> Result<Option<u64>> {
    let role = users::Entity::find_by_id(creator)
        .one(services.db())
        .await?
        .map(|u| u.role);
    Ok(match role {
        Some(UserRole::Admin) => None,
        _ => Some(services.repos().size_limit_bytes),
    })
}

/// Fetches one repo_unit now and records the outcome on its row.
pub async fn sync(services: &Services, uuid: Uuid) -> Result<repo_units::Model> {
    let state = services.repo_sync();
    let lock = state.lock_for(uuid);
    let _one_at_a_time = lock.lock().await;
    let _permit = state.permits.acquire().await.map_err(Error::internal)?;
    state
        .running
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _running = RunningGuard(state);

    let row = repo_units::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("repo_unit"))?;
    let credentials = credentials_of(services, &row)?;
    let limit = size_limit_for(services, row.creator_uuid).await?;
    let path = services.repos().mirror_path(uuid);
    let url = row.clone_url.clone();
    let allow_local = services.repos().allow_local_remotes;
    let outcome = tokio::task::spawn_blocking(move || {
        fetch_or_reclone(&path, &url, credentials.as_ref(), limit, allow_local)
    })
    .await
    .map_err(Error::internal)?;

    let mut active = row.clone().into_active_model();
    let moves = match outcome {
        Ok(moves) => {
            active.last_synced_at = Set(Some(Utc::now()));
            active.last_sync_error = Set(None);
            state.record(uuid, true);
            moves
        }
        Err(error) => {
            tracing::warn!(repo_unit = %uuid, %error, "sync failed");
            active.last_sync_error = Set(Some(error.to_string()));
            state.record(uuid, false);
            Vec::new()
        }
    };
    active.updated_at = Set(Utc::now());
    let row = active.update(services.db()).await?;
    for BranchMove { branch, old, new } in moves {
        let Some(new) = new else { continue };
        tracing::info!(repo_unit = %uuid, %branch, %new, "branch moved");
        // Nobody listening is fine: the units issue subscribes when it starts.
        let _ = state.events.send(RepoEvent::BranchMoved {
            repo_unit: uuid.into(),
            branch,
            old,
            new,
        });
    }
    Ok(row)
}

fn fetch_or_reclone(
    path: &std::path::Path,
    url: &str,
    credentials: Option<&Credentials>,
    limit: Option<u64>,
    allow_local: bool,
) -> std::result::Result<Vec<BranchMove>, RepoError> {
    // The stored URL passed the address check when it was created; the transport checks the address
    // its host resolves to now, at connect time (a name may since point inside the network).
    if path.exists() {
        Mirror::open(path)?.fetch(credentials, limit, allow_local)
    } else {
        // A data dir restored without its mirrors: clone again, every branch counts as moved.
        let mirror = Mirror::clone_into(
            path,
            &CloneUrl::trusted(url)?,
            credentials,
            limit,
            allow_local,
        )?;
        Ok(mirror
            .branches()?
            .into_iter()
            .map(|b| BranchMove {
                branch: b.name,
                old: None,
                new: Some(b.commit),
            })
            .collect())
    }
}

/// Starts the sync a verified push delivery asks for, unless it is a replay or one is already scheduled.
pub fn webhook_sync(services: &Services, uuid: Uuid, delivery: Option<&str>) -> WebhookSync {
    let (outcome, delay) = services
        .repo_sync()
        .admit_webhook(uuid, delivery, Instant::now());
    if let Some(delay) = delay {
        spawn_sync(services, uuid, delay);
    } else {
        tracing::info!(repo_unit = %uuid, ?outcome, "webhook delivery starts no sync");
    }
    outcome
}

/// Starts a sync in the background (webhooks, the scheduler).
pub fn spawn_sync(services: &Services, uuid: Uuid, jitter: Duration) {
    let services = services.clone();
    tokio::spawn(async move {
        if !jitter.is_zero() {
            tokio::time::sleep(jitter).await;
        }
        if let Err(error) = sync(&services, uuid).await {
            tracing::warn!(repo_unit = %uuid, error = %error, "background sync failed");
        }
    });
}

/// The periodic scheduler: every `check_interval`, starts a sync of each auto-syncing repo_unit whose
/// period has passed (and whose backoff, after failures, is over), spread out with random jitter.
pub async fn run_scheduler(services: Services, check_interval: Duration) {
    let mut ticker = tokio::time::interval(check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = schedule_due(&services, check_interval).await {
            tracing::warn!(%error, "sync scheduler pass failed");
        }
    }
}

async fn schedule_due(services: &Services, check_interval: Duration) -> Result<()> {
    let now = Utc::now();
    let rows = repo_units::Entity::find()
        .filter(repo_units::Column::AutoSync.eq(true))
        .all(services.db())
        .await?;
    for row in rows {
        let period = Duration::from_secs(row.sync_period_seconds.max(60) as u64);
        let due = row
            .last_synced_at
            .is_none_or(|at| (now - at).to_std().unwrap_or_default() >= period);
        if due && services.repo_sync().backoff_over(row.uuid, period) {
            let jitter_cap = check_interval.min(period / 10).as_millis().max(1) as u64;
            let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..jitter_cap));
            spawn_sync(services, row.uuid, jitter);
        }
    }
    Ok(())
}

/// Where repository mirrors live and how big they may grow.
#[derive(Debug, Clone)]
pub struct RepoSettings {
    pub dir: PathBuf,
    pub size_limit_bytes: u64,
    pub allow_local_remotes: bool,
}

impl RepoSettings {
    pub fn mirror_path(&self, uuid: Uuid) -> PathBuf {
        self.dir.join(uuid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_deliveries_are_deduplicated_and_folded() {
        let sync = RepoSync::new(1);
        let (repo, other) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        let admit = |id: Option<&str>, uuid, at| sync.admit_webhook(uuid, id, at);
        assert_eq!(
            admit(Some("a"), repo, t0),
            (WebhookSync::Scheduled, Some(Duration::ZERO))
        );
        assert_eq!(
            admit(Some("a"), repo, t0),
            (WebhookSync::Replayed, None),
            "replay"
        );
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            admit(Some("b"), repo, soon),
            (
                WebhookSync::Scheduled,
                Some(WEBHOOK_SYNC_INTERVAL - Duration::from_secs(1))
            ),
            "a new push within the interval waits for its end"
        );
        for i in 0..100 {
            let id = format!("c{i}");
            assert_eq!(admit(Some(&id), repo, soon).0, WebhookSync::Folded);
            assert_eq!(admit(None, repo, soon).0, WebhookSync::Folded);
        }
        assert_eq!(
            admit(Some("a"), other, t0).0,
            WebhookSync::Scheduled,
            "per repo"
        );
        let later = t0 + 3 * WEBHOOK_SYNC_INTERVAL;
        assert_eq!(
            admit(None, repo, later),
            (WebhookSync::Scheduled, Some(Duration::ZERO))
        );
    }

    #[test]
    fn backoff_doubles_from_a_minute_and_is_capped_by_the_period() {
        let sync = RepoSync::new(1);
        let uuid = Uuid::new_v4();
        let day = Duration::from_secs(86_400);
        assert!(sync.backoff_over(uuid, day), "never failed: due");
        sync.record(uuid, false);
        assert!(!sync.backoff_over(uuid, day), "just failed: wait a minute");
        assert!(
            sync.backoff_over(uuid, Duration::ZERO),
            "never longer than the period"
        );
        {
            let mut failures = sync.failures.lock().unwrap();
            let past = Instant::now() - Duration::from_secs(61);
            failures.insert(uuid, (1, past));
        }
        assert!(sync.backoff_over(uuid, day), "one failure: one minute");
        sync.failures
            .lock()
            .unwrap()
            .insert(uuid, (3, Instant::now() - Duration::from_secs(200)));
        assert!(
            !sync.backoff_over(uuid, day),
            "three failures: four minutes"
        );
        sync.record(uuid, true);
        assert!(sync.backoff_over(uuid, day), "a success forgives");
    }
}
