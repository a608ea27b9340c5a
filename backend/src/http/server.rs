//! The HTTP accept loop. `axum::serve` has neither a connection cap nor a header-read timeout, so a client
//! could hold any number of sockets open by sending half a request; here every connection takes a place
//! under a total and a per-address cap (over it the socket is closed at once), and hyper closes one that
//! has not sent a complete request head within the timeout (which also ends idle keep-alive connections).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::limits::{ConnectionCap, LimitCounters};

/// The HTTP server's limits, from the configuration.
pub struct Limits {
    connections: ConnectionCap,
    header_read_timeout: Duration,
    counters: LimitCounters,
}

impl Limits {
    pub fn from_config(config: &Config, counters: LimitCounters) -> Self {
        Self {
            connections: ConnectionCap::new(
                "http_connections",
                config.http_max_connections,
                config.http_max_connections_per_ip,
                counters.clone(),
            ),
            header_read_timeout: Duration::from_secs(config.http_header_read_timeout_seconds),
            counters,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Dropping `stop` asks every connection to finish gracefully; `done` closes once they all have.
    let (stop, stopping) = watch::channel(());
    let (done, all_done) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = limits.connections.admit(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stopping = stopping.clone();
        let all_done = all_done.clone();
        let counters = limits.counters.clone();
        let timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let mut router = router.clone();
                    async move {
                        Ok::<_, Infallible>(
                            match tower_service::Service::call(&mut router, request).await {
                                Ok(response) => response,
                                Err(never) => match never {},
                            },
                        )
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let mut graceful = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result
                            && error.is_timeout()
                        {
                            counters.hit(
                                "http_header_read_timeout",
                                &format_args!("{peer} sent no complete request head in {timeout:?}"),
                            );
                        }
                        break;
                    }
                    _ = stopping.changed(), if !graceful => {
                        graceful = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(admitted);
            drop(all_done);
        });
    }
    drop(stop);
    drop(all_done);
    done.closed().await;
}
