//! The service layer: every rule of Pepeunit lives here, whichever transport (GraphQL, REST, MQTT) calls it.

pub mod access;
pub mod actor;
pub mod alerts;
pub mod api_tokens;
pub mod boards;
pub mod federation;
pub mod login_throttle;
pub mod mail;
pub mod passwords;
pub mod repo_sync;
pub mod repo_units;
pub mod session_cache;
pub mod settings;
pub mod tokens;
pub mod units;
pub mod user_deletion;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;

use crate::config::{Config, ConfigError, PublicEndpoint};
use crate::crypto::MasterKey;
use crate::secrets::InstanceSecrets;

pub use actor::{Actor, AuthUser};

/// What every service call needs; cheap to clone.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    db: DatabaseConnection,
    tokens: tokens::TokenIssuer,
    passwords: passwords::PasswordHasher,
    throttle: login_throttle::LoginThrottle,
    master_key: MasterKey,
    repos: repo_sync::RepoSettings,
    repo_sync: repo_sync::RepoSync,
    sessions: session_cache::SessionCache,
    units: UnitSettings,
    unit_events: units::events::UnitEvents,
    live: units::live::LiveFeed,
    firmware_hashes: units::bundle::FirmwareHashes,
    bundle_builds: units::bundle::BundleBuilds,
    federation: pepeunit_federation::Federation,
    federation_tap: Arc<pepeunit_federation::outbox::Tap>,
    federation_host: Arc<federation::host::ServerHost>,
    federation_channels: std::sync::Mutex<Option<FederationChannels>>,
    alerts: alerts::Alerting,
    mail: mail::Mail,
}

/// What the server's tasks read: values for the outbox, values from peers for the broker.
pub struct FederationChannels {
    pub offers: tokio::sync::mpsc::Receiver<pepeunit_federation::outbox::Offer>,
    pub remote_values: tokio::sync::mpsc::Receiver<federation::host::RemoteValue>,
}

/// Values from peers waiting for the broker.
const REMOTE_VALUE_QUEUE: usize = 4096;

fn federation_settings(config: &Config) -> Result<pepeunit_federation::Settings, ConfigError> {
    let public_url = url::Url::parse(&config.public_url).map_err(|e| {
        ConfigError::new(format!(
            "public_url (PEPEUNIT_PUBLIC_URL) is not a URL: {e}"
        ))
    })?;
    Ok(pepeunit_federation::Settings {
        public_url,
        allow_local: config.allow_local_remotes,
        is_internal: pepeunit_repositories::remote::is_internal,
        max_activity_bytes: config.federation_max_activity_bytes,
        clock_skew: Duration::from_secs(config.federation_clock_skew_seconds),
        request_timeout: Duration::from_secs(config.federation_request_timeout_seconds),
        outbox: pepeunit_federation::outbox::Limits {
            flush_interval: Duration::from_millis(config.federation_flush_interval_ms),
            max_batch: config.federation_max_batch,
            max_pending_per_peer: config.federation_max_pending_per_peer,
            ..pepeunit_federation::outbox::Limits::default()
        },
    })
}

/// What units are generated with.
#[derive(Debug, Clone)]
pub struct UnitSettings {
    pub endpoint: PublicEndpoint,
    pub state_send_interval_seconds: u64,
    pub log_ttl_seconds: u64,
    /// Largest value a unit may publish (`unit_value_max_bytes`).
    pub value_max_bytes: usize,
    /// Bytes of publishes one unit may have waiting for a commit (`ingest_unit_backlog_bytes`).
    pub backlog_bytes: usize,
    /// Most log lines stored from one message (`unit_log_entries_per_message`).
    pub log_entries_per_message: usize,
    /// Most log lines stored per unit per minute (`unit_log_lines_per_minute`).
    pub log_lines_per_minute: u32,
    /// Most log lines kept per unit (`unit_log_lines_kept`).
    pub log_lines_kept: u64,
    /// Seconds a unit has to report its new target commit before the update fails (`unit_update_timeout_seconds`).
    pub update_timeout_seconds: u64,
}

impl Services {
    pub fn new(
        config: &Config,
        db: DatabaseConnection,
        secrets: InstanceSecrets,
    ) -> Result<Self, ConfigError> {
        let settings = federation_settings(config)?;
        let (federation_tap, offers) =
            pepeunit_federation::outbox::Tap::new(settings.outbox.channel);
        let (remote_sender, remote_values) = tokio::sync::mpsc::channel(REMOTE_VALUE_QUEUE);
        let federation_host = Arc::new(federation::host::ServerHost::new(remote_sender));
        let federation = pepeunit_federation::Federation::new(settings, federation_host.clone())
            .map_err(|e| ConfigError::new(format!("federation: {e}")))?;
        let services = Self {
            inner: Arc::new(Inner {
                db,
                tokens: tokens::TokenIssuer::new(
                    secrets.jwt_key.expose().as_bytes(),
                    Duration::from_secs(config.access_token_ttl_seconds),
                    Duration::from_secs(config.refresh_token_ttl_seconds),
                ),
                passwords: passwords::PasswordHasher::new(),
                throttle: login_throttle::LoginThrottle::new(
                    config.login_max_failures,
                    Duration::from_secs(config.login_failure_window_seconds),
                ),
                master_key: secrets.master_key,
                repos: repo_sync::RepoSettings {
                    dir: config.repositories_dir(),
                    size_limit_bytes: config.repository_size_limit_bytes,
                    allow_local_remotes: config.allow_local_remotes,
                },
                repo_sync: repo_sync::RepoSync::new(config.sync_concurrency),
                sessions: session_cache::SessionCache::default(),
                units: UnitSettings {
                    endpoint: config.public_endpoint()?,
                    state_send_interval_seconds: config.unit_state_send_interval_seconds,
                    log_ttl_seconds: config.unit_log_ttl_seconds,
                    value_max_bytes: config.unit_value_max_bytes,
                    backlog_bytes: config.ingest_unit_backlog_bytes,
                    log_entries_per_message: config.unit_log_entries_per_message,
                    log_lines_per_minute: config.unit_log_lines_per_minute,
                    log_lines_kept: config.unit_log_lines_kept,
                    update_timeout_seconds: config.unit_update_timeout_seconds,
                },
                unit_events: units::events::UnitEvents::default(),
                live: units::live::LiveFeed::default(),
                firmware_hashes: units::bundle::FirmwareHashes::default(),
                bundle_builds: units::bundle::BundleBuilds::new(
                    pepeunit_repositories::BundleLimits {
                        max_file_bytes: config.bundle_max_file_bytes,
                        max_total_bytes: config.bundle_max_total_bytes,
                    },
                    config.bundle_concurrency,
                    std::time::Duration::from_secs(config.bundle_wait_seconds),
                ),
                federation,
                federation_tap,
                federation_host: federation_host.clone(),
                federation_channels: std::sync::Mutex::new(Some(FederationChannels {
                    offers,
                    remote_values,
                })),
                alerts: alerts::Alerting::new(config),
                mail: mail::Mail::new(config)?,
            }),
        };
        federation_host.attach(Arc::downgrade(&services.inner));
        Ok(services)
    }

    /// Federation with other instances.
    pub fn federation(&self) -> &pepeunit_federation::Federation {
        &self.inner.federation
    }

    /// Where ingestion hands committed values to federation.
    pub fn federation_tap(&self) -> &pepeunit_federation::outbox::Tap {
        &self.inner.federation_tap
    }

    /// The federation tasks' ends of their channels; the first caller (the server) gets them.
    pub fn take_federation_channels(&self) -> Option<FederationChannels> {
        self.inner
            .federation_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The tap itself, for the outbox that must share it.
    pub(crate) fn inner_federation_tap(&self) -> Arc<pepeunit_federation::outbox::Tap> {
        self.inner.federation_tap.clone()
    }

    /// What the outbox reads followers and overflowed values from.
    pub(crate) fn federation_source(&self) -> Arc<dyn pepeunit_federation::outbox::Source> {
        self.inner.federation_host.clone()
    }

    /// Verification and password-reset mails.
    pub fn mail(&self) -> &mail::Mail {
        &self.inner.mail
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    pub fn tokens(&self) -> &tokens::TokenIssuer {
        &self.inner.tokens
    }

    pub(crate) fn passwords(&self) -> &passwords::PasswordHasher {
        &self.inner.passwords
    }

    pub(crate) fn throttle(&self) -> &login_throttle::LoginThrottle {
        &self.inner.throttle
    }

    /// The key secrets at rest are sealed with.
    pub fn master_key(&self) -> &MasterKey {
        &self.inner.master_key
    }

    pub(crate) fn sessions(&self) -> &session_cache::SessionCache {
        &self.inner.sessions
    }

    /// Where mirrors live and the limits on them.
    pub fn repos(&self) -> &repo_sync::RepoSettings {
        &self.inner.repos
    }

    /// The instance facts units are generated with.
    pub fn units(&self) -> &UnitSettings {
        &self.inner.units
    }

    /// What happens to units, for the broker and live views.
    pub fn unit_events(&self) -> &units::events::UnitEvents {
        &self.inner.unit_events
    }

    /// SHA-256 of firmware archives already computed, by repo_unit and commit.
    pub fn bundle_builds(&self) -> &units::bundle::BundleBuilds {
        &self.inner.bundle_builds
    }

    pub fn firmware_hashes(&self) -> &units::bundle::FirmwareHashes {
        &self.inner.firmware_hashes
    }

    /// Live values, state, logs and presence for browsers.
    pub fn live(&self) -> &units::live::LiveFeed {
        &self.inner.live
    }

    /// Alert rules' queue of observations, and the outbox's wake-up.
    pub fn alerts(&self) -> &alerts::Alerting {
        &self.inner.alerts
    }

    /// Sync state and the repository event stream.
    pub fn repo_sync(&self) -> &repo_sync::RepoSync {
        &self.inner.repo_sync
    }
}
