//! Start-up: `build(config)` assembles a ready server, `serve(listener, shutdown)` runs it.
//!
//! Tests call both directly with a port-0 listener and their own database.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::{self, DbStartError};
use crate::graphql::{PepeunitSchema, build_schema};
use crate::http::{self, AppState, metrics::Metrics};
use crate::secrets::{InstanceSecrets, SecretsError};
use crate::services::Services;

/// The server could not start; the message says which setting to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Database(#[from] DbStartError),
    #[error("cannot listen on http_bind (PEPEUNIT_HTTP_BIND) {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built server, not yet listening.
pub struct App {
    state: AppState,
    sync_check_interval: std::time::Duration,
}

/// Opens the database, applies migrations and loads the instance secrets.
pub async fn build(config: Config) -> Result<App, StartError> {
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    let secrets = InstanceSecrets::load_or_create(&config)?;
    let services = Services::new(&config, db, secrets)?;
    let schema: PepeunitSchema = build_schema(&config, services.clone());
    tracing::info!(database = db::backend_name(services.db()), "database ready");
    Ok(App {
        state: AppState {
            services,
            schema,
            metrics: Arc::new(Metrics::new()),
            max_body_bytes: config.max_body_bytes,
            trust_forwarded_for: config.trust_forwarded_for,
        },
        sync_check_interval: std::time::Duration::from_secs(config.sync_check_interval_seconds),
    })
}

/// Binds the configured HTTP address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.http_bind)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.http_bind,
            source,
        })
}

impl App {
    /// The services, for the CLI and for tests that set up data directly.
    pub fn services(&self) -> &Services {
        &self.state.services
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
        let log_purge = tokio::spawn(crate::services::units::data::run_log_purge(
            self.state.services.clone(),
        ));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "listening");
        }
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        scheduler.abort();
        followers.abort();
        log_purge.abort();
        self.state.services.db().clone().close().await.ok();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
