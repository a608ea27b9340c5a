//! Start-up: `build(config)` assembles a ready server, `serve(listener, shutdown)` runs it.
//!
//! Tests call both directly with a port-0 listener and their own database.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::Config;
use crate::db::{self, DbStartError};
use crate::graphql::{PepeunitSchema, build_schema};
use crate::http::{self, AppState, metrics::Metrics};
use crate::secrets::{InstanceSecrets, SecretsError};
use crate::services::Services;
use crate::services::units::events::UnitEvent;

/// How long a graceful stop waits, in all, for MQTT connections to end, their publishes to be committed
/// and federation to send what waits: under the 10 s a container runtime gives before SIGKILL.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

/// The server could not start; the message says which setting to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    MqttBind(#[from] crate::broker::BindError),
    #[error(transparent)]
    MqttTls(#[from] crate::broker::tls::TlsError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Database(#[from] DbStartError),
    #[error(transparent)]
    Telegram(#[from] crate::telegram::TelegramError),
    #[error("cannot set up the webhook client: {0}")]
    Webhooks(String),
    #[error("cannot listen on mqtt_tls_bind (PEPEUNIT_MQTT_TLS_BIND) {addr}: {cause}")]
    MqttTlsBind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot listen on http_bind (PEPEUNIT_HTTP_BIND) {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
}

/// A built server, not yet listening.
pub struct App {
    state: AppState,
    sync_check_interval: std::time::Duration,
    broker: Broker,
    http_limits: http::server::Limits,
    mqtt_bind: SocketAddr,
    mqtt_listener: Option<TcpListener>,
    /// MQTT over TLS, when a certificate is configured: the acceptor, the address, a listener given by tests.
    mqtt_tls: Option<(tokio_rustls::TlsAcceptor, SocketAddr)>,
    mqtt_tls_listener: Option<TcpListener>,
    unit_events: tokio::sync::broadcast::Receiver<UnitEvent>,
    /// Scheduled backups need the whole configuration (secrets, data dir, database).
    config: Config,
    alert_transports: crate::services::alerts::deliver::Transports,
    telegram: Option<Arc<crate::telegram::Telegram>>,
}

/// Checks the TLS files, opens the database, applies migrations and loads the instance secrets. Binds
/// nothing: the CLI builds an app to administer it without serving; `serve` binds before building, so a
/// taken port stops the server before anything is written to the data directory.
pub async fn build(config: Config) -> Result<App, StartError> {
    // Settings that can be wrong are checked before the data directory is created.
    let mqtt_tls = match (&config.mqtt_tls_cert, &config.mqtt_tls_key) {
        (Some(cert), Some(key)) => Some((
            crate::broker::tls::acceptor(cert, key)?,
            config.mqtt_tls_bind,
        )),
        _ => None,
    };
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    let secrets = InstanceSecrets::load_or_create(&config)?;
    let services = Services::new(&config, db, secrets)?;
    let telegram = crate::telegram::Telegram::from_config(&config)?;
    let webhooks = Arc::new(
        crate::alert_webhooks::Webhooks::new(config.allow_local_remotes)
            .map_err(|e| StartError::Webhooks(e.to_string()))?,
    );
    let alert_transports = crate::services::alerts::deliver::Transports {
        telegram: telegram
            .clone()
            .map(|t| t as Arc<dyn crate::services::alerts::deliver::AlertTransport>),
        webhook: Some(webhooks.clone()),
        values: Some(webhooks),
    };
    let unit_events = services.unit_events().subscribe();
    let counters = crate::limits::LimitCounters::default();
    let broker = Broker::new(
        services.clone(),
        crate::broker::Limits::from_config(&config, counters.clone()),
    );
    let http_limits = http::server::Limits::from_config(&config, counters.clone());
    let schema: PepeunitSchema = build_schema(&config, services.clone());
    tracing::info!(database = db::backend_name(services.db()), "database ready");
    Ok(App {
        state: AppState {
            broker: broker.clone(),
            services,
            schema,
            metrics: Arc::new(Metrics::with_limits(&counters)),
            max_body_bytes: config.max_body_bytes,
            trust_forwarded_for: config.trust_forwarded_for,
            frontend_dir: Arc::new(config.frontend_dir.clone()),
            metrics_token: config.metrics_token.clone().map(Arc::new),
            values: Arc::new(crate::http::values::ValueLimits::new(
                config.rest_values_rate,
                config.rest_values_burst,
                config.rest_values_max_batch,
            )),
            telegram: telegram.clone(),
        },
        sync_check_interval: std::time::Duration::from_secs(config.sync_check_interval_seconds),
        broker,
        http_limits,
        mqtt_bind: config.mqtt_bind,
        mqtt_listener: None,
        mqtt_tls,
        mqtt_tls_listener: None,
        unit_events,
        config,
        alert_transports,
        telegram,
    })
}

/// Ports tried after the default MQTT port, before one the system picks.
const MQTT_FALLBACK_PORTS: u16 = 16;

/// Binds `mqtt_bind` and sets it to the address bound, so units' env.json names the port really listened
/// on (also when it was 0).
///
/// A first run must come up on a machine where another broker (often Mosquitto) holds the default port:
/// when `mqtt_bind` was not set explicitly and is taken, the next free port of the following
/// [`MQTT_FALLBACK_PORTS`] is bound (the same one on every restart while the other broker stays, so units
/// keep finding it), else one the system picks; a warning says so, and GraphQL `mqttBroker` shows it. An
/// explicitly set address that is taken is an error naming the setting.
pub async fn bind_mqtt(config: &mut Config) -> Result<TcpListener, StartError> {
    let wanted = config.mqtt_bind;
    let error = match crate::broker::bind(wanted).await {
        Ok(listener) => return Ok(bound(config, listener)),
        Err(error) => error,
    };
    if config.mqtt_bind_explicit
        || wanted.port() == 0
        || error.cause.kind() != std::io::ErrorKind::AddrInUse
    {
        return Err(error.into());
    }
    let next = (1..=MQTT_FALLBACK_PORTS).filter_map(|i| wanted.port().checked_add(i));
    for port in next.chain([0]) {
        let mut addr = wanted;
        addr.set_port(port);
        if let Ok(listener) = TcpListener::bind(addr).await {
            let listener = bound(config, listener);
            config.mqtt_default_taken = Some(wanted);
            tracing::warn!(
                taken = %wanted,
                bound = %config.mqtt_bind,
                "THE DEFAULT MQTT PORT {} IS IN USE (another broker?): the embedded broker listens on {} \
                 instead, and units' env.json names that port. Set mqtt_bind (PEPEUNIT_MQTT_BIND) to choose one",
                wanted.port(),
                config.mqtt_bind,
            );
            return Ok(listener);
        }
    }
    Err(error.into())
}

fn bound(config: &mut Config, listener: TcpListener) -> TcpListener {
    if let Ok(addr) = listener.local_addr() {
        config.mqtt_bind = addr;
    }
    listener
}

/// Binds `mqtt_tls_bind` when TLS is configured, so a port in use is a start-up error.
pub async fn bind_mqtt_tls(config: &Config) -> Result<Option<TcpListener>, StartError> {
    if config.mqtt_tls_cert.is_none() {
        return Ok(None);
    }
    let addr = config.mqtt_tls_bind;
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|cause| StartError::MqttTlsBind { addr, cause })
}

/// Binds the configured HTTP address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.http_bind)
        .await
        .map_err(|cause| StartError::Bind {
            addr: config.http_bind,
            cause,
        })
}

impl App {
    /// The services, for the CLI and for tests that set up data directly.
    pub fn services(&self) -> &Services {
        &self.state.services
    }

    /// Serves MQTT over TLS on `listener` instead of binding `mqtt_tls_bind`.
    pub fn with_mqtt_tls_listener(mut self, listener: TcpListener) -> Self {
        self.mqtt_tls_listener = Some(listener);
        self
    }

    /// Serves MQTT on `listener` instead of binding `mqtt_bind` in [`App::serve`].
    pub fn with_mqtt_listener(mut self, listener: TcpListener) -> Self {
        self.mqtt_listener = Some(listener);
        self
    }

    /// The embedded broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Starts federation's tasks: the outbox (returned first, if started: a stop lets it finish), the
    /// delivery of peers' values into the broker, and the watch on shared units going away.
    fn start_federation(
        &self,
    ) -> (
        Option<tokio::task::JoinHandle<()>>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        use crate::broker::MessageBus;
        let services = &self.state.services;
        let mut tasks = vec![tokio::spawn(crate::services::federation::run_events(
            services.clone(),
        ))];
        let mut outbox = None;
        if let Some(channels) = services.take_federation_channels() {
            let tap = services.inner_federation_tap();
            outbox = Some(tokio::spawn(pepeunit_federation::outbox::run(
                services.federation().clone(),
                services.federation_source(),
                tap,
                channels.offers,
            )));
            let broker = self.broker.clone();
            let mut remote_values = channels.remote_values;
            // Retained: a unit that connects after a peer's value arrived (after a restart of either
            // instance, say) still gets the newest value of the remote output.
            tasks.push(tokio::spawn(async move {
                while let Some((topic, payload)) = remote_values.recv().await {
                    broker.publish(&topic, &payload, true);
                }
            }));
        }
        (outbox, tasks)
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = http::router(self.state.clone());
        let scheduler = tokio::spawn(crate::services::repo_sync::run_scheduler(
            self.state.services.clone(),
            self.sync_check_interval,
        ));
        let followers = tokio::spawn(crate::services::units::run_followers(
            self.state.services.clone(),
        ));
        crate::services::units::catch_up(&self.state.services).await;
        let backups = tokio::spawn(crate::backup::schedule::run(
            self.config.clone(),
            self.state.services.db().clone(),
        ));
        let log_purge = tokio::spawn(crate::services::units::data::run_log_purge(
            self.state.services.clone(),
        ));
        let mail = tokio::spawn(crate::services::mail::run(self.state.services.clone()));
        let update_timeouts = tokio::spawn(crate::services::units::update_timeouts::run(
            self.state.services.clone(),
        ));
        crate::services::units::rollouts::resume_all(&self.state.services).await;
        if let Err(error) = self.broker.restore().await {
            tracing::warn!(%error, "restoring retained messages failed");
        }
        let (federation_outbox, federation) = self.start_federation();
        let evaluator = tokio::spawn(crate::services::alerts::evaluate::run(
            self.state.services.clone(),
        ));
        let outbox = tokio::spawn(crate::services::alerts::deliver::run(
            self.state.services.clone(),
            self.alert_transports.clone(),
        ));
        let values = self.alert_transports.values.clone().map(|t| {
            tokio::spawn(crate::services::alerts::values::run(
                self.state.services.clone(),
                t,
            ))
        });
        let bot = self
            .telegram
            .as_ref()
            .map(|bot| bot.start(self.state.services.clone()))
            .unwrap_or_default();
        let commands = tokio::spawn(crate::broker::commands::run(
            self.broker.clone(),
            self.unit_events,
        ));
        let mqtt_listener = match self.mqtt_listener {
            Some(listener) => listener,
            None => crate::broker::bind(self.mqtt_bind)
                .await
                .map_err(|e| std::io::Error::new(e.cause.kind(), e.to_string()))?,
        };
        if let Ok(addr) = mqtt_listener.local_addr() {
            tracing::info!(%addr, "mqtt listening");
        }
        let mqtt = tokio::spawn(self.broker.clone().serve(mqtt_listener));
        let mqtt_tls = match self.mqtt_tls {
            Some((acceptor, addr)) => {
                let listener = match self.mqtt_tls_listener {
                    Some(listener) => listener,
                    None => TcpListener::bind(addr).await?,
                };
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "mqtt over tls listening");
                }
                Some(tokio::spawn(crate::broker::tls::serve(
                    self.broker.clone(),
                    listener,
                    acceptor,
                )))
            }
            None => None,
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "listening");
        }
        http::server::serve(listener, router, self.http_limits, shutdown).await;
        // In order, so that nothing is cut half-way: no new MQTT connections; the open ones closed and
        // what they had handed to ingestion committed; federation sends what ingestion gave it; only
        // then the rest stops and the database closes.
        mqtt.abort();
        if let Some(task) = &mqtt_tls {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        self.broker.shutdown(deadline).await;
        if let Some(task) = federation_outbox {
            self.state.services.federation_tap().finish();
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        scheduler.abort();
        followers.abort();
        log_purge.abort();
        update_timeouts.abort();
        mail.abort();
        backups.abort();
        commands.abort();
        evaluator.abort();
        outbox.abort();
        if let Some(values) = values {
            values.abort();
        }
        for task in federation.into_iter().chain(bot) {
            task.abort();
        }
        self.state.services.db().clone().close().await.ok();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when it is first
/// polled, so a signal during start-up (migrations, restoring retained messages) still stops gracefully.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {},
                () = wait(terminate) => {},
            }
            tracing::info!("shutdown requested");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
}
