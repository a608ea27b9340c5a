//! The one typed configuration of a Pepeunit server.
//!
//! Layers, each overriding the one before: built-in defaults that need nothing installed, an optional TOML
//! file (`--config` / `PEPEUNIT_CONFIG`), then `PEPEUNIT_*` environment variables and command-line flags.
//! Every knob is a flag with an environment variable, so `pepeunit serve --help` is the full reference.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize, Serializer};

/// A value that must never reach a log line, an error message or `pepeunit config`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("********")
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How the Telegram bot receives updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    /// Webhook when `public_url` is https (Telegram only calls https), long polling otherwise.
    Auto,
    /// Long polling (`getUpdates`): needs nothing incoming.
    Polling,
    /// Telegram POSTs updates to `<public_url>/api/v1/telegram/webhook`.
    Webhook,
}

/// SQLite's `synchronous` setting: what a commit (and so a PUBACK) survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// The WAL is synced at every commit: a commit survives a power cut.
    Full,
    /// Synced at checkpoints: a commit survives a crash of the server, the last ones may be lost in a power cut.
    Normal,
}

/// The effective configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: Option<Secret>,
    pub database_max_connections: u32,
    pub http_bind: SocketAddr,
    pub public_url: String,
    pub log_level: String,
    pub log_format: LogFormat,
    pub secret_key: Option<Secret>,
    pub encryption_key: Option<Secret>,
    pub access_token_ttl_seconds: u64,
    pub refresh_token_ttl_seconds: u64,
    pub max_body_bytes: usize,
    pub graphql_max_depth: usize,
    pub graphql_max_complexity: usize,
    pub login_max_failures: u32,
    pub login_failure_window_seconds: u64,
    pub trust_forwarded_for: bool,
    pub repository_size_limit_bytes: u64,
    pub allow_local_remotes: bool,
    pub standard_repositories: Vec<String>,
    pub sync_concurrency: usize,
    pub sync_check_interval_seconds: u64,
    pub mqtt_bind: SocketAddr,
    pub mqtt_tls_bind: SocketAddr,
    pub mqtt_tls_cert: Option<PathBuf>,
    pub mqtt_tls_key: Option<PathBuf>,
    pub mqtt_public_host: Option<String>,
    pub mqtt_public_port: Option<u16>,
    pub unit_state_send_interval_seconds: u64,
    pub unit_log_ttl_seconds: u64,
    pub unit_value_max_bytes: usize,
    pub ingest_unit_backlog_bytes: usize,
    pub unit_log_entries_per_message: usize,
    pub unit_log_lines_per_minute: u32,
    pub unit_log_lines_kept: u64,
    pub unit_update_timeout_seconds: u64,
    pub database_sqlite_synchronous: SqliteSync,
    pub http_max_connections: usize,
    pub http_max_connections_per_ip: usize,
    pub http_header_read_timeout_seconds: u64,
    pub mqtt_max_connections: usize,
    pub mqtt_max_connections_per_ip: usize,
    pub mqtt_subscriber_queue: usize,
    pub mqtt_slow_subscriber_timeout_seconds: u64,
    pub mqtt_max_inflight: u16,
    pub mqtt_publish_rate: u32,
    pub mqtt_publish_burst: u32,
    pub mqtt_publish_bytes_per_second: u64,
    pub mqtt_session_expiry_max_seconds: u64,
    pub mqtt_session_max_queued: usize,
    pub rest_values_rate: u32,
    pub rest_values_burst: u32,
    pub rest_values_max_batch: usize,
    pub frontend_dir: PathBuf,
    /// Whether `mqtt_bind` came from the file, the environment or a flag rather than the default: only the
    /// default port may fall back to a free one when it is taken (see [`crate::app::bind_mqtt`]).
    #[serde(skip)]
    pub mqtt_bind_explicit: bool,
    /// Set at start-up when the default MQTT address was taken and the broker fell back to `mqtt_bind`.
    #[serde(skip)]
    pub mqtt_default_taken: Option<SocketAddr>,
    pub bundle_max_file_bytes: u64,
    pub bundle_max_total_bytes: u64,
    pub bundle_concurrency: usize,
    pub bundle_wait_seconds: u64,
    pub metrics_token: Option<Secret>,
    pub smtp_url: Option<Secret>,
    pub smtp_from: Option<String>,
    pub mail_link_ttl_seconds: u64,
    pub mail_requests_per_hour: u32,
    pub graphql_time_budget_ms: u64,
    pub backup_dir: Option<PathBuf>,
    pub backup_interval_seconds: u64,
    pub backup_keep: usize,
    pub backup_passphrase: Option<Secret>,
    pub federation_max_activity_bytes: usize,
    pub federation_clock_skew_seconds: u64,
    pub federation_request_timeout_seconds: u64,
    pub federation_flush_interval_ms: u64,
    pub federation_max_batch: usize,
    pub federation_max_pending_per_peer: usize,
    pub telegram_bot_token: Option<Secret>,
    pub telegram_api_url: Option<String>,
    pub telegram_mode: TelegramMode,
    pub alert_rules_per_user: u32,
    pub alert_webhooks_per_user: u32,
    pub alert_channel_max_failures: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_max_connections: 16,
            http_bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".to_owned(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            secret_key: None,
            encryption_key: None,
            access_token_ttl_seconds: 15 * 60,
            refresh_token_ttl_seconds: 30 * 24 * 3600,
            max_body_bytes: 1024 * 1024,
            graphql_max_depth: 12,
            graphql_max_complexity: 50_000,
            login_max_failures: 10,
            login_failure_window_seconds: 300,
            trust_forwarded_for: false,
            repository_size_limit_bytes: 10 * 1024 * 1024,
            allow_local_remotes: false,
            standard_repositories: Vec::new(),
            sync_concurrency: 4,
            sync_check_interval_seconds: 60,
            mqtt_bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            mqtt_tls_bind: SocketAddr::from(([127, 0, 0, 1], 8883)),
            mqtt_tls_cert: None,
            mqtt_tls_key: None,
            mqtt_public_host: None,
            mqtt_public_port: None,
            unit_state_send_interval_seconds: 300,
            unit_log_ttl_seconds: 86_400,
            unit_value_max_bytes: 64 * 1024,
            ingest_unit_backlog_bytes: 1024 * 1024,
            unit_log_entries_per_message: 100,
            unit_log_lines_per_minute: 600,
            unit_log_lines_kept: 10_000,
            unit_update_timeout_seconds: 1_800,
            database_sqlite_synchronous: SqliteSync::Full,
            http_max_connections: 10_000,
            http_max_connections_per_ip: 256,
            http_header_read_timeout_seconds: 10,
            mqtt_max_connections: 50_000,
            mqtt_max_connections_per_ip: 1_024,
            mqtt_subscriber_queue: 1_024,
            mqtt_slow_subscriber_timeout_seconds: 10,
            mqtt_max_inflight: 64,
            mqtt_publish_rate: 100,
            mqtt_publish_burst: 1_000,
            mqtt_publish_bytes_per_second: 1_048_576,
            mqtt_session_expiry_max_seconds: 7_200,
            mqtt_session_max_queued: 1_000,
            rest_values_rate: 100,
            rest_values_burst: 1_000,
            rest_values_max_batch: 1_000,
            // Where this checkout's build script puts the web app (see frontend-build/).
            frontend_dir: PathBuf::from(env!("PEPEUNIT_FRONTEND_DIST")),
            mqtt_bind_explicit: false,
            mqtt_default_taken: None,
            bundle_max_file_bytes: 32 * 1024 * 1024,
            bundle_max_total_bytes: 128 * 1024 * 1024,
            bundle_concurrency: 4,
            bundle_wait_seconds: 30,
            metrics_token: None,
            smtp_url: None,
            smtp_from: None,
            mail_link_ttl_seconds: 3_600,
            mail_requests_per_hour: 5,
            graphql_time_budget_ms: 10_000,
            backup_dir: None,
            backup_interval_seconds: 86_400,
            backup_keep: 7,
            backup_passphrase: None,
            federation_max_activity_bytes: 1024 * 1024,
            federation_clock_skew_seconds: 300,
            federation_request_timeout_seconds: 10,
            federation_flush_interval_ms: 20,
            federation_max_batch: 1000,
            federation_max_pending_per_peer: 10_000,
            telegram_bot_token: None,
            telegram_api_url: None,
            telegram_mode: TelegramMode::Auto,
            alert_rules_per_user: 200,
            alert_webhooks_per_user: 10,
            alert_channel_max_failures: 10,
        }
    }
}

/// Every knob as a flag and an environment variable; unset ones fall through to the file and the defaults.
#[derive(Clone, Debug, Default, Args, Serialize)]
pub struct ConfigArgs {
    /// TOML file with any of the settings below (keys as the long flag names, with `_` for `-`).
    #[arg(long = "config", env = "PEPEUNIT_CONFIG", global = true)]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,

    /// Directory for the SQLite database, generated secrets and repository mirrors [default: ./data]
    #[arg(long, env = "PEPEUNIT_DATA_DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// Database URL: `sqlite://path?mode=rwc` or `postgres://user:pass@host/db` [default: SQLite in the data dir]
    #[arg(
        long,
        env = "PEPEUNIT_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,

    /// Largest number of pooled database connections [default: 16]
    #[arg(long, env = "PEPEUNIT_DATABASE_MAX_CONNECTIONS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_max_connections: Option<u32>,

    /// Address the HTTP server listens on [default: 127.0.0.1:8080]
    #[arg(long, env = "PEPEUNIT_HTTP_BIND", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_bind: Option<SocketAddr>,

    /// URL users and devices reach this instance at [default: http://127.0.0.1:8080]
    #[arg(long, env = "PEPEUNIT_PUBLIC_URL", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,

    /// Log filter, e.g. `info` or `pepeunit_backend=debug,info` [default: info]
    #[arg(long, env = "PEPEUNIT_LOG_LEVEL", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,

    /// Log line format [default: text]
    #[arg(long, env = "PEPEUNIT_LOG_FORMAT", global = true, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Key that signs JWTs (at least 32 bytes) [default: generated into <data dir>/secrets.toml]
    #[arg(
        long,
        env = "PEPEUNIT_SECRET_KEY",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,

    /// Base64 of the 32-byte AES-256-GCM master key for secrets at rest [default: generated into <data dir>/secrets.toml]
    #[arg(
        long,
        env = "PEPEUNIT_ENCRYPTION_KEY",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<String>,

    /// Lifetime of an access token in seconds [default: 900]
    #[arg(long, env = "PEPEUNIT_ACCESS_TOKEN_TTL_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_ttl_seconds: Option<u64>,

    /// Lifetime of a refresh token in seconds [default: 2592000]
    #[arg(long, env = "PEPEUNIT_REFRESH_TOKEN_TTL_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token_ttl_seconds: Option<u64>,

    /// Largest accepted request body in bytes [default: 1048576]
    #[arg(long, env = "PEPEUNIT_MAX_BODY_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,

    /// Deepest GraphQL query accepted [default: 12]
    #[arg(long, env = "PEPEUNIT_GRAPHQL_MAX_DEPTH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql_max_depth: Option<usize>,

    /// Most costly GraphQL operation accepted (see docs/src/configuration.md for the cost model) [default: 50000]
    #[arg(long, env = "PEPEUNIT_GRAPHQL_MAX_COMPLEXITY", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql_max_complexity: Option<usize>,

    /// Failed logins from one address before it gets 429 [default: 10]
    #[arg(long, env = "PEPEUNIT_LOGIN_MAX_FAILURES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_max_failures: Option<u32>,

    /// Window in seconds over which failed logins are counted [default: 300]
    #[arg(long, env = "PEPEUNIT_LOGIN_FAILURE_WINDOW_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_failure_window_seconds: Option<u64>,

    /// Take the client address from X-Forwarded-For (only behind a trusted reverse proxy) [default: false]
    #[arg(long, env = "PEPEUNIT_TRUST_FORWARDED_FOR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_forwarded_for: Option<bool>,

    /// Largest repository a non-admin may mirror, in bytes, enforced while it downloads [default: 10485760]
    #[arg(long, env = "PEPEUNIT_REPOSITORY_SIZE_LIMIT_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_size_limit_bytes: Option<u64>,

    /// Allow clone URLs on loopback and private networks (a self-hosted git server on the LAN) [default: false]
    #[arg(long, env = "PEPEUNIT_ALLOW_LOCAL_REMOTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_local_remotes: Option<bool>,

    /// Comma-separated clone URLs of standard unit repositories, offered by `admin create --with-standard-repositories` [default: none]
    #[arg(
        long,
        env = "PEPEUNIT_STANDARD_REPOSITORIES",
        global = true,
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standard_repositories: Option<Vec<String>>,

    /// Most repository syncs running at once [default: 4]
    #[arg(long, env = "PEPEUNIT_SYNC_CONCURRENCY", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_concurrency: Option<usize>,

    /// How often the scheduler looks for repositories due for a sync, in seconds [default: 60]
    #[arg(long, env = "PEPEUNIT_SYNC_CHECK_INTERVAL_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_check_interval_seconds: Option<u64>,

    /// MQTT listen address of the embedded broker [default: 127.0.0.1:1883]
    #[arg(long, env = "PEPEUNIT_MQTT_BIND", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_bind: Option<SocketAddr>,

    /// MQTT over TLS listen address, used when a certificate is configured [default: 127.0.0.1:8883]
    #[arg(long, env = "PEPEUNIT_MQTT_TLS_BIND", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_tls_bind: Option<SocketAddr>,

    /// PEM certificate chain for MQTT over TLS; with mqtt_tls_key it turns TLS on [default: none]
    #[arg(long, env = "PEPEUNIT_MQTT_TLS_CERT", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_tls_cert: Option<PathBuf>,

    /// PEM private key for MQTT over TLS [default: none]
    #[arg(long, env = "PEPEUNIT_MQTT_TLS_KEY", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_tls_key: Option<PathBuf>,

    /// MQTT host written into units' env.json [default: the host of the public URL]
    #[arg(long, env = "PEPEUNIT_MQTT_PUBLIC_HOST", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_public_host: Option<String>,

    /// MQTT port written into units' env.json [default: the port of mqtt_bind]
    #[arg(long, env = "PEPEUNIT_MQTT_PUBLIC_PORT", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_public_port: Option<u16>,

    /// How often new units publish their state, in seconds (their env.json's PU_STATE_SEND_INTERVAL) [default: 300]
    #[arg(long, env = "PEPEUNIT_UNIT_STATE_SEND_INTERVAL_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_state_send_interval_seconds: Option<u64>,

    /// How long unit log lines are kept, in seconds [default: 86400]
    #[arg(long, env = "PEPEUNIT_UNIT_LOG_TTL_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_log_ttl_seconds: Option<u64>,

    /// Largest variable value a unit may publish, in bytes; a larger one is not stored, routed or acknowledged [default: 65536]
    #[arg(long, env = "PEPEUNIT_UNIT_VALUE_MAX_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_value_max_bytes: Option<usize>,

    /// Bytes of publishes one unit may have waiting for their commit; beyond it that unit's connection waits [default: 1048576]
    #[arg(long, env = "PEPEUNIT_INGEST_UNIT_BACKLOG_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_unit_backlog_bytes: Option<usize>,

    /// Most log lines stored from one log message; the rest are refused [default: 100]
    #[arg(long, env = "PEPEUNIT_UNIT_LOG_ENTRIES_PER_MESSAGE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_log_entries_per_message: Option<usize>,

    /// Most log lines stored per unit per minute; the rest are refused [default: 600]
    #[arg(long, env = "PEPEUNIT_UNIT_LOG_LINES_PER_MINUTE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_log_lines_per_minute: Option<u32>,

    /// Most log lines kept per unit; older ones are deleted [default: 10000]
    #[arg(long, env = "PEPEUNIT_UNIT_LOG_LINES_KEPT", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_log_lines_kept: Option<u64>,

    /// Seconds a unit has to report the target commit it was told to run before that update turns failed (rollout waves use their own timeout) [default: 1800]
    #[arg(long, env = "PEPEUNIT_UNIT_UPDATE_TIMEOUT_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_update_timeout_seconds: Option<u64>,

    /// SQLite durability: `full` (an acknowledged publish survives a power cut) or `normal` (survives a crash of the server, faster) [default: full]
    #[arg(
        long,
        env = "PEPEUNIT_DATABASE_SQLITE_SYNCHRONOUS",
        global = true,
        value_enum
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_sqlite_synchronous: Option<SqliteSync>,
    /// Most open HTTP connections; more are closed at once (0 = no cap) [default: 10000]
    #[arg(long, env = "PEPEUNIT_HTTP_MAX_CONNECTIONS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_connections: Option<usize>,

    /// Most open HTTP connections from one client address (0 = no cap) [default: 256]
    #[arg(long, env = "PEPEUNIT_HTTP_MAX_CONNECTIONS_PER_IP", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_connections_per_ip: Option<usize>,

    /// Seconds a client has to send a request's headers, also how long an idle keep-alive connection stays open [default: 10]
    #[arg(long, env = "PEPEUNIT_HTTP_HEADER_READ_TIMEOUT_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_read_timeout_seconds: Option<u64>,

    /// Most open MQTT connections over TCP, TLS and WebSocket; more are closed at once (0 = no cap) [default: 50000]
    #[arg(long, env = "PEPEUNIT_MQTT_MAX_CONNECTIONS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_max_connections: Option<usize>,

    /// Most open MQTT connections from one client address (0 = no cap) [default: 1024]
    #[arg(long, env = "PEPEUNIT_MQTT_MAX_CONNECTIONS_PER_IP", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_max_connections_per_ip: Option<usize>,

    /// Messages queued for one subscribing connection before routing waits for it [default: 1024]
    #[arg(long, env = "PEPEUNIT_MQTT_SUBSCRIBER_QUEUE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_subscriber_queue: Option<usize>,

    /// Seconds a subscriber's full queue may block a delivery before that subscriber is disconnected [default: 10]
    #[arg(
        long,
        env = "PEPEUNIT_MQTT_SLOW_SUBSCRIBER_TIMEOUT_SECONDS",
        global = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_slow_subscriber_timeout_seconds: Option<u64>,

    /// QoS 1 deliveries to one connection awaiting its PUBACK (MQTT 5 clients may ask for fewer) [default: 64]
    #[arg(long, env = "PEPEUNIT_MQTT_MAX_INFLIGHT", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_max_inflight: Option<u16>,

    /// Sustained PUBLISH packets per second one connection may send (0 = no limit) [default: 100]
    #[arg(long, env = "PEPEUNIT_MQTT_PUBLISH_RATE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_publish_rate: Option<u32>,

    /// PUBLISH packets one connection may send at once above the sustained rate [default: 1000]
    #[arg(long, env = "PEPEUNIT_MQTT_PUBLISH_BURST", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_publish_burst: Option<u32>,

    /// Sustained PUBLISH payload bytes per second one connection may send, with a burst of four seconds' worth (0 = no limit) [default: 1048576]
    #[arg(long, env = "PEPEUNIT_MQTT_PUBLISH_BYTES_PER_SECOND", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_publish_bytes_per_second: Option<u64>,

    /// Longest a persistent MQTT session (clean_session = 0, or an MQTT 5 Session Expiry Interval) is kept after its connection ends, in seconds (0 = sessions are never kept) [default: 7200]
    #[arg(long, env = "PEPEUNIT_MQTT_SESSION_EXPIRY_MAX_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_session_expiry_max_seconds: Option<u64>,

    /// Most QoS 1 messages a kept MQTT session holds for its offline unit; past it the oldest is dropped and counted [default: 1000]
    #[arg(long, env = "PEPEUNIT_MQTT_SESSION_MAX_QUEUED", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_session_max_queued: Option<usize>,

    /// Sustained values per second one unit may post over REST (`POST /api/v1/units/{uuid}/values`; 0 = no limit) [default: 100]
    #[arg(long, env = "PEPEUNIT_REST_VALUES_RATE", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_values_rate: Option<u32>,

    /// Values one unit may post over REST at once above the sustained rate [default: 1000]
    #[arg(long, env = "PEPEUNIT_REST_VALUES_BURST", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_values_burst: Option<u32>,

    /// Most values in one REST request [default: 1000]
    #[arg(long, env = "PEPEUNIT_REST_VALUES_MAX_BATCH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_values_max_batch: Option<usize>,

    /// Directory of the built web app served at `/` [default: where this build put it]
    #[arg(long, env = "PEPEUNIT_FRONTEND_DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontend_dir: Option<PathBuf>,

    /// Largest file a firmware bundle may carry, uncompressed, in bytes [default: 33554432]
    #[arg(long, env = "PEPEUNIT_BUNDLE_MAX_FILE_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_max_file_bytes: Option<u64>,

    /// Most bytes a firmware bundle may hold, uncompressed, all files together [default: 134217728]
    #[arg(long, env = "PEPEUNIT_BUNDLE_MAX_TOTAL_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_max_total_bytes: Option<u64>,

    /// Most firmware bundles built at once (downloads and update hashes); others wait up to bundle_wait_seconds [default: 4]
    #[arg(long, env = "PEPEUNIT_BUNDLE_CONCURRENCY", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_concurrency: Option<usize>,

    /// Seconds a download waits for one of the bundle_concurrency builds before it is refused with 503 [default: 30]
    #[arg(long, env = "PEPEUNIT_BUNDLE_WAIT_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_wait_seconds: Option<u64>,

    /// Bearer token that opens GET /metrics to any client; without it only loopback clients not behind a proxy may read it [default: none]
    #[arg(
        long,
        env = "PEPEUNIT_METRICS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,

    /// SMTP server for verification and password-reset mails: smtp://[user:password@]host[:port] (STARTTLS required), smtps://... (TLS), or smtp://...?tls=none for a local relay; without it no mail is sent [default: none]
    #[arg(long, env = "PEPEUNIT_SMTP_URL", global = true, hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,

    /// Sender address of the mails, e.g. "Pepeunit <noreply@example.com>"; required with smtp_url [default: none]
    #[arg(long, env = "PEPEUNIT_SMTP_FROM", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_from: Option<String>,

    /// Seconds an e-mail verification or password-reset link stays valid [default: 3600]
    #[arg(long, env = "PEPEUNIT_MAIL_LINK_TTL_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_link_ttl_seconds: Option<u64>,

    /// Most password-reset or verification mails requested per hour for one e-mail address, and (ten times that) from one client address [default: 5]
    #[arg(long, env = "PEPEUNIT_MAIL_REQUESTS_PER_HOUR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_requests_per_hour: Option<u32>,

    /// Longest a GraphQL query or mutation may run, in milliseconds, before it ends with TIMEOUT [default: 10000]
    #[arg(long, env = "PEPEUNIT_GRAPHQL_TIME_BUDGET_MS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql_time_budget_ms: Option<u64>,

    /// Directory for scheduled backups; unset, the server takes none (`pepeunit backup` still works) [default: none]
    #[arg(long, env = "PEPEUNIT_BACKUP_DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_dir: Option<PathBuf>,

    /// Seconds between scheduled backups [default: 86400]
    #[arg(long, env = "PEPEUNIT_BACKUP_INTERVAL_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_interval_seconds: Option<u64>,

    /// Scheduled backups kept in backup_dir; older ones are removed after each good one [default: 7]
    #[arg(long, env = "PEPEUNIT_BACKUP_KEEP", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_keep: Option<usize>,

    /// Passphrase that encrypts backups (scheduled ones and `pepeunit backup`) and opens them in `pepeunit restore` [default: none, not encrypted]
    #[arg(
        long,
        env = "PEPEUNIT_BACKUP_PASSPHRASE",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_passphrase: Option<String>,

    /// Largest activity another instance may post to the inbox, in bytes [default: 1048576]
    #[arg(long, env = "PEPEUNIT_FEDERATION_MAX_ACTIVITY_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_max_activity_bytes: Option<usize>,

    /// How far, in seconds, a federation request's Date may be from this clock [default: 300]
    #[arg(long, env = "PEPEUNIT_FEDERATION_CLOCK_SKEW_SECONDS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_clock_skew_seconds: Option<u64>,

    /// Timeout of each request to another instance, in seconds [default: 10]
    #[arg(
        long,
        env = "PEPEUNIT_FEDERATION_REQUEST_TIMEOUT_SECONDS",
        global = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_request_timeout_seconds: Option<u64>,

    /// How long values wait for a peer before they are sent, in milliseconds [default: 20]
    #[arg(long, env = "PEPEUNIT_FEDERATION_FLUSH_INTERVAL_MS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_flush_interval_ms: Option<u64>,

    /// Most samples in one Values activity; a full batch is sent at once [default: 1000]
    #[arg(long, env = "PEPEUNIT_FEDERATION_MAX_BATCH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_max_batch: Option<usize>,

    /// Most samples waiting for one peer; past it only the newest of each output is kept [default: 10000]
    #[arg(long, env = "PEPEUNIT_FEDERATION_MAX_PENDING_PER_PEER", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_max_pending_per_peer: Option<usize>,

    /// Token of the Telegram bot (from BotFather) that sends alerts and answers commands; without it there is no bot [default: none]
    #[arg(
        long,
        env = "PEPEUNIT_TELEGRAM_BOT_TOKEN",
        global = true,
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram_bot_token: Option<String>,

    /// Base URL of the Telegram Bot API (a self-hosted Bot API server) [default: https://api.telegram.org]
    #[arg(long, env = "PEPEUNIT_TELEGRAM_API_URL", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram_api_url: Option<String>,

    /// How the bot gets updates: auto (webhook when public_url is https, else long polling), polling, webhook [default: auto]
    #[arg(long, env = "PEPEUNIT_TELEGRAM_MODE", global = true, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram_mode: Option<TelegramMode>,

    /// Most alert rules one user may have [default: 200]
    #[arg(long, env = "PEPEUNIT_ALERT_RULES_PER_USER", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_rules_per_user: Option<u32>,

    /// Most webhook channels one user may have [default: 10]
    #[arg(long, env = "PEPEUNIT_ALERT_WEBHOOKS_PER_USER", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_webhooks_per_user: Option<u32>,

    /// Failed deliveries in a row after which an alert channel is paused, with the last error as its reason [default: 10]
    #[arg(long, env = "PEPEUNIT_ALERT_CHANNEL_MAX_FAILURES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_channel_max_failures: Option<u32>,
}

/// Where units reach this instance, as written into their env.json.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicEndpoint {
    pub https: bool,
    /// Host, with the port when it is not the scheme's default; also the first segment of every topic.
    pub domain: String,
    /// Path under which the instance is served, without a trailing slash (`""` at the root).
    pub app_prefix: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// The default MQTT port, when it was taken and the broker listens on `mqtt_port` instead.
    pub mqtt_default_port_taken: Option<u16>,
}

/// The configuration could not be assembled.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl Config {
    /// Merges the defaults, the TOML file named by `args` (if any) and the flags/environment in `args`.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        // What the user set, apart from the defaults, to know which settings are explicit.
        let mut set = Figment::new();
        if let Some(path) = &args.config_file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} (PEPEUNIT_CONFIG) does not exist",
                    path.display()
                )));
            }
            set = set.merge(Toml::file_exact(path));
        }
        let set = set.merge(Serialized::defaults(args));
        let mut config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(set.clone())
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.mqtt_bind_explicit = set.contains("mqtt_bind");
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.telegram_api_url
            && url::Url::parse(url).is_err()
        {
            return Err(ConfigError(
                "telegram_api_url (PEPEUNIT_TELEGRAM_API_URL) is not a URL".into(),
            ));
        }
        if self.alert_channel_max_failures == 0 {
            return Err(ConfigError(
                "alert_channel_max_failures (PEPEUNIT_ALERT_CHANNEL_MAX_FAILURES) must be positive"
                    .into(),
            ));
        }
        if self.access_token_ttl_seconds == 0 || self.refresh_token_ttl_seconds == 0 {
            return Err(ConfigError("token lifetimes must be positive".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError(
                "max_body_bytes (PEPEUNIT_MAX_BODY_BYTES) must be at least 1024".into(),
            ));
        }
        if self.bundle_concurrency == 0 {
            return Err(ConfigError(
                "bundle_concurrency (PEPEUNIT_BUNDLE_CONCURRENCY) must be positive".into(),
            ));
        }
        if self.sync_concurrency == 0 || self.sync_check_interval_seconds == 0 {
            return Err(ConfigError(
                "sync_concurrency and sync_check_interval_seconds must be positive".into(),
            ));
        }
        self.public_endpoint()?;
        if self.federation_max_activity_bytes < 1024
            || self.federation_clock_skew_seconds == 0
            || self.federation_request_timeout_seconds == 0
            || self.federation_flush_interval_ms == 0
            || self.federation_max_batch == 0
            || self.federation_max_pending_per_peer < self.federation_max_batch
        {
            return Err(ConfigError(
                "federation_max_activity_bytes must be at least 1024, federation_clock_skew_seconds, \
                 federation_request_timeout_seconds, federation_flush_interval_ms and federation_max_batch \
                 positive, and federation_max_pending_per_peer at least federation_max_batch"
                    .into(),
            ));
        }
        if self.http_header_read_timeout_seconds == 0
            || self.mqtt_slow_subscriber_timeout_seconds == 0
            || self.mqtt_subscriber_queue == 0
            || self.mqtt_max_inflight == 0
            || self.mqtt_session_max_queued == 0
            || self.rest_values_max_batch == 0
        {
            return Err(ConfigError(
                "http_header_read_timeout_seconds, mqtt_slow_subscriber_timeout_seconds, mqtt_subscriber_queue, mqtt_max_inflight, mqtt_session_max_queued and rest_values_max_batch must be positive".into(),
            ));
        }
        if self.mqtt_tls_cert.is_some() != self.mqtt_tls_key.is_some() {
            return Err(ConfigError(
                "mqtt_tls_cert (PEPEUNIT_MQTT_TLS_CERT) and mqtt_tls_key (PEPEUNIT_MQTT_TLS_KEY) go together"
                    .into(),
            ));
        }
        if self.backup_interval_seconds == 0 || self.backup_keep == 0 {
            return Err(ConfigError(
                "backup_interval_seconds (PEPEUNIT_BACKUP_INTERVAL_SECONDS) and backup_keep \
                 (PEPEUNIT_BACKUP_KEEP) must be positive"
                    .into(),
            ));
        }
        if self
            .backup_passphrase
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            return Err(ConfigError(
                "backup_passphrase (PEPEUNIT_BACKUP_PASSPHRASE) is empty".into(),
            ));
        }
        if self.unit_update_timeout_seconds == 0
            || self.mail_link_ttl_seconds == 0
            || self.mail_requests_per_hour == 0
        {
            return Err(ConfigError(
                "unit_update_timeout_seconds, mail_link_ttl_seconds and mail_requests_per_hour must be positive"
                    .into(),
            ));
        }
        if self.smtp_url.is_some() != self.smtp_from.is_some() {
            return Err(ConfigError(
                "smtp_url (PEPEUNIT_SMTP_URL) and smtp_from (PEPEUNIT_SMTP_FROM) go together"
                    .into(),
            ));
        }
        if self.unit_state_send_interval_seconds == 0 || self.unit_log_ttl_seconds == 0 {
            return Err(ConfigError(
                "unit_state_send_interval_seconds and unit_log_ttl_seconds must be positive".into(),
            ));
        }
        if self.unit_value_max_bytes == 0
            || self.ingest_unit_backlog_bytes < self.unit_value_max_bytes
            || self.unit_log_entries_per_message == 0
            || self.unit_log_lines_kept == 0
        {
            return Err(ConfigError(
                "unit_value_max_bytes, unit_log_entries_per_message and unit_log_lines_kept must be \
                 positive, and ingest_unit_backlog_bytes at least unit_value_max_bytes"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The public URL taken apart the way units' env.json needs it.
    pub fn public_endpoint(&self) -> Result<PublicEndpoint, ConfigError> {
        let bad = |why: &str| {
            ConfigError(format!(
                "public_url (PEPEUNIT_PUBLIC_URL) {:?} {why}",
                self.public_url
            ))
        };
        let url = url::Url::parse(&self.public_url).map_err(|_| bad("is not a URL"))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("must start with http:// or https://")),
        };
        let host = url.host_str().ok_or_else(|| bad("has no host"))?.to_owned();
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not carry a query or fragment"));
        }
        let domain = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        Ok(PublicEndpoint {
            https,
            domain,
            app_prefix: url.path().trim_end_matches('/').to_owned(),
            mqtt_host: self.mqtt_public_host.clone().unwrap_or(host),
            mqtt_port: self.mqtt_public_port.unwrap_or(self.mqtt_bind.port()),
            mqtt_default_port_taken: self.mqtt_default_taken.map(|addr| addr.port()),
        })
    }

    /// The database URL in force: the configured one, or SQLite inside the data dir.
    pub fn effective_database_url(&self) -> Secret {
        match &self.database_url {
            Some(url) => url.clone(),
            None => Secret::new(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("pepeunit.db").display()
            )),
        }
    }

    /// Where repository mirrors live.
    pub fn repositories_dir(&self) -> PathBuf {
        self.data_dir.join("repositories")
    }

    /// Where generated instance secrets live.
    pub fn secrets_path(&self) -> PathBuf {
        self.data_dir.join("secrets.toml")
    }

    /// A fresh configuration for a test: its own data dir, port 0, and the given database.
    pub fn for_tests(data_dir: &Path, database_url: Option<String>) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            database_url: database_url.map(Secret::new),
            http_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    /// The configuration as TOML, secrets masked, for `pepeunit config`.
    pub fn to_masked_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_or_output() {
        let config = Config {
            secret_key: Some(Secret::new("super-secret-signing-key")),
            database_url: Some(Secret::new("postgres://u:hunter2@db/pepeunit")),
            ..Config::default()
        };
        let debug = format!("{config:?}");
        let toml = config.to_masked_toml().unwrap();
        for shown in [debug, toml] {
            assert!(!shown.contains("super-secret-signing-key"));
            assert!(!shown.contains("hunter2"));
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pepeunit.toml");
        std::fs::write(&file, "graphql_max_depth = 7\nlog_level = \"debug\"\n").unwrap();
        let args = ConfigArgs {
            config_file: Some(file),
            log_level: Some("warn".into()),
            ..ConfigArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.graphql_max_depth, 7);
        assert_eq!(config.log_level, "warn");
        assert_eq!(config.graphql_max_complexity, 50_000);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pepeunit.toml");
        std::fs::write(&file, "graphql_max_dept = 7\n").unwrap();
        let args = ConfigArgs {
            config_file: Some(file),
            ..ConfigArgs::default()
        };
        let err = Config::load(&args).unwrap_err().to_string();
        assert!(err.contains("graphql_max_dept"), "{err}");
    }

    #[test]
    fn missing_config_file_names_the_setting() {
        let args = ConfigArgs {
            config_file: Some("/nonexistent/pepeunit.toml".into()),
            ..ConfigArgs::default()
        };
        let err = Config::load(&args).unwrap_err().to_string();
        assert!(err.contains("PEPEUNIT_CONFIG"), "{err}");
    }

    #[test]
    fn mqtt_bind_is_explicit_only_when_set() {
        assert!(
            !Config::load(&ConfigArgs::default())
                .unwrap()
                .mqtt_bind_explicit
        );
        let flag = ConfigArgs {
            mqtt_bind: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            ..ConfigArgs::default()
        };
        assert!(Config::load(&flag).unwrap().mqtt_bind_explicit);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pepeunit.toml");
        std::fs::write(&file, "mqtt_bind = \"127.0.0.1:1883\"\n").unwrap();
        let in_file = ConfigArgs {
            config_file: Some(file),
            ..ConfigArgs::default()
        };
        assert!(Config::load(&in_file).unwrap().mqtt_bind_explicit);
    }
}
