//! Prometheus metrics: request counts and latencies per route, served as text at `GET /metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// The server's metric registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pepeunit");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            latency.clone(),
        );
        registry.register(
            "ingest_limits_hit",
            "Publishes refused or held back by a per-unit ingestion limit, by limit",
            crate::broker::ingest::LIMITS_HIT.clone(),
        );
        registry.register(
            "processing_rejected",
            "Output values turned away by their processing filters (type, range, rate, duplicate; not \
             stored, not routed) or left out of aggregation (not_numeric, late), by reason",
            crate::services::units::processing::REJECTED.clone(),
        );
        registry.register(
            "alert_observations_dropped",
            "Values no alert rule evaluated because the evaluator's queue was full",
            crate::services::alerts::OBSERVATIONS_DROPPED.clone(),
        );
        registry.register(
            "mails_dropped",
            "Verification or password-reset mails dropped because the mail queue was full",
            crate::services::mail::outbox::MAILS_DROPPED.clone(),
        );
        registry.register(
            "mails_failed",
            "Mails the SMTP server did not take after every retry",
            crate::services::mail::outbox::MAILS_FAILED.clone(),
        );
        Self {
            registry,
            requests,
            latency,
        }
    }
}

impl Metrics {
    /// The registry with the counters of hit limits as well.
    pub fn with_limits(counters: &crate::limits::LimitCounters) -> Self {
        let mut metrics = Self::new();
        counters.register(&mut metrics.registry);
        metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware that counts and times every request by its route template (never the raw path, which
/// would let clients blow up label cardinality).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    // The web app's files have no route template: one label for all of them, another for misses.
    let route = route.unwrap_or_else(|| {
        let served = response.status().is_success() || response.status().is_redirection();
        if served { "/app" } else { "unmatched" }.to_owned()
    });
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Whether a request may read `/metrics`: with `metrics_token` set, any client presenting it as a bearer
/// token; without, only a client connected directly from loopback (a forwarding header means a proxy
/// relayed it from elsewhere).
fn may_read(state: &AppState, peer: std::net::SocketAddr, headers: &axum::http::HeaderMap) -> bool {
    use subtle::ConstantTimeEq;
    match &state.metrics_token {
        Some(token) => super::bearer(headers)
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))),
        None => {
            peer.ip().is_loopback()
                && !["forwarded", "x-forwarded-for", "x-real-ip"]
                    .iter()
                    .any(|h| headers.contains_key(*h))
        }
    }
}

pub async fn render(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !may_read(&state, peer, &headers) {
        return crate::error::json_error(
            axum::http::StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "metrics need the metrics token (metrics_token) or a loopback client",
        );
    }
    let mut text = String::new();
    if let Err(error) =
        prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry)
    {
        return crate::error::Error::internal(error).into_response();
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
