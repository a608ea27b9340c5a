//! The outbox worker: sends pending deliveries through the transports the server runs, in order per
//! channel, retrying with backoff; a channel that keeps failing is paused with the last error as its reason.
//!
//! Delivery is at least once: a row is marked sent only after its transport accepted it, so a crash in
//! between sends it again after the restart, and never more than once otherwise (one row per alert and
//! channel, one worker).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use tokio::task::JoinSet;
use url::Url;
use uuid::Uuid;

use crate::domain::InvalidValue;
use crate::entities::{alert_channels, alert_deliveries, alerts};
use crate::error::{Error, Result};
use crate::services::Services;
use crate::services::alerts::ChannelKind;

/// A delivery row waiting to be sent.
pub const PENDING: &str = "pending";
/// A delivery row its transport accepted.
pub const SENT: &str = "sent";

/// Most deliveries taken in one round.
const ROUND: u64 = 256;
/// Longest wait between retries of one delivery.
const MAX_BACKOFF_SECONDS: i64 = 300;

/// Why a transport did not deliver.
#[derive(Debug, Clone)]
pub enum DeliveryError {
    /// Try again later.
    Retry(String),
    /// Retrying cannot help (the bot was blocked, the address is refused): pause the channel.
    Permanent(String),
    /// The transport is not running here (no bot token): leave the row as it is.
    Unavailable,
}

/// A way alerts leave the server.
pub trait AlertTransport: Send + Sync + 'static {
    fn deliver<'a>(
        &'a self,
        services: &'a Services,
        channel: &'a alert_channels::Model,
        alert: &'a alerts::Model,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<(), DeliveryError>> + Send + 'a>>;
}

/// The transports by channel kind.
#[derive(Clone, Default)]
pub struct Transports {
    pub telegram: Option<Arc<dyn AlertTransport>>,
    pub webhook: Option<Arc<dyn AlertTransport>>,
    /// Every value of chosen variables to webhooks ([`super::values`]).
    pub values: Option<Arc<dyn super::values::ValueTransport>>,
}

impl Transports {
    fn of(&self, kind: ChannelKind) -> Option<Arc<dyn AlertTransport>> {
        match kind {
            ChannelKind::Telegram => self.telegram.clone(),
            ChannelKind::Webhook => self.webhook.clone(),
        }
    }
}

/// Sends the outbox until the task is dropped.
pub async fn run(services: Services, transports: Transports) {
    loop {
        if let Err(error) = round(&services, &transports).await {
            tracing::warn!(%error, "alert delivery round failed");
        }
        tokio::select! {
            () = services.alerts().outbox_notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass over what is due: each channel's deliveries in order, channels side by side.
async fn round(services: &Services, transports: &Transports) -> Result<()> {
    let due = alert_deliveries::Entity::find()
        .filter(alert_deliveries::Column::Status.eq(PENDING))
        .filter(alert_deliveries::Column::NextAttemptAt.lte(Utc::now()))
        .order_by_asc(alert_deliveries::Column::Id)
        .limit(ROUND)
        .all(services.db())
        .await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut by_channel: HashMap<Uuid, Vec<alert_deliveries::Model>> = HashMap::new();
    for row in due {
        by_channel.entry(row.channel_uuid).or_default().push(row);
    }
    let channels = alert_channels::Entity::find()
        .filter(alert_channels::Column::Uuid.is_in(by_channel.keys().copied()))
        .filter(alert_channels::Column::Paused.eq(false))
        .all(services.db())
        .await?;
    let mut tasks = JoinSet::new();
    for channel in channels {
        let Some(transport) = ChannelKind::of(&channel).and_then(|kind| transports.of(kind)) else {
            continue;
        };
        let rows = by_channel.remove(&channel.uuid).unwrap_or_default();
        let services = services.clone();
        tasks.spawn(async move { send_channel(&services, transport, channel, rows).await });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Err(error)) => tracing::warn!(%error, "alert delivery failed"),
            Err(error) => tracing::warn!(%error, "alert delivery task failed"),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}

/// Sends one channel's due rows in order; stops at the first failure so later alerts never overtake.
async fn send_channel(
    services: &Services,
    transport: Arc<dyn AlertTransport>,
    channel: alert_channels::Model,
    rows: Vec<alert_deliveries::Model>,
) -> Result<()> {
    for row in rows {
        let Some(alert) = alerts::Entity::find_by_id(row.alert_uuid)
            .one(services.db())
            .await?
        else {
            continue;
        };
        match transport.deliver(services, &channel, &alert).await {
            Ok(()) => {
                alert_deliveries::Entity::update_many()
                    .col_expr(alert_deliveries::Column::Status, Expr::value(SENT))
                    .col_expr(alert_deliveries::Column::SentAt, Expr::value(Utc::now()))
                    .col_expr(
                        alert_deliveries::Column::Attempts,
                        Expr::value(row.attempts.saturating_add(1)),
                    )
                    .filter(alert_deliveries::Column::Id.eq(row.id))
                    .exec(services.db())
                    .await?;
                if channel.failures > 0 {
                    alert_channels::Entity::update_many()
                        .col_expr(alert_channels::Column::Failures, Expr::value(0))
                        .filter(alert_channels::Column::Uuid.eq(channel.uuid))
                        .exec(services.db())
                        .await?;
                }
            }
            Err(DeliveryError::Unavailable) => return Ok(()),
            Err(error) => {
                failed(services, &channel, &row, error).await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Schedules the row's next attempt and counts the failure against its channel, pausing it when the
/// failures reach the limit or the error is permanent.
async fn failed(
    services: &Services,
    channel: &alert_channels::Model,
    row: &alert_deliveries::Model,
    error: DeliveryError,
) -> Result<()> {
    let (message, permanent) = match error {
        DeliveryError::Retry(message) => (message, false),
        DeliveryError::Permanent(message) => (message, true),
        DeliveryError::Unavailable => return Ok(()),
    };
    let attempts = row.attempts.saturating_add(1);
    let backoff = 2i64
        .saturating_pow(attempts.clamp(0, 20) as u32)
        .min(MAX_BACKOFF_SECONDS);
    let message: String = message.chars().take(500).collect();
    tracing::info!(channel = %channel.uuid, attempts, %message, "alert delivery failed; retrying later");
    alert_deliveries::Entity::update_many()
        .col_expr(alert_deliveries::Column::Attempts, Expr::value(attempts))
        .col_expr(
            alert_deliveries::Column::NextAttemptAt,
            Expr::value(Utc::now() + chrono::Duration::seconds(backoff)),
        )
        .col_expr(
            alert_deliveries::Column::LastError,
            Expr::value(message.clone()),
        )
        .filter(alert_deliveries::Column::Id.eq(row.id))
        .exec(services.db())
        .await?;
    let failures = channel.failures.saturating_add(1);
    let max = services.alerts().settings().channel_max_failures;
    let pause = permanent || u32::try_from(failures).unwrap_or(u32::MAX) >= max;
    let mut active = channel.clone().into_active_model();
    active.failures = Set(failures);
    if pause {
        tracing::warn!(channel = %channel.uuid, %message, "alert channel paused");
        active.paused = Set(true);
        active.paused_reason = Set(Some(if permanent {
            message
        } else {
            format!("{failures} deliveries failed in a row; the last: {message}")
        }));
    }
    active.updated_at = Set(Utc::now());
    active.update(services.db()).await?;
    Ok(())
}

/// Unpauses a channel and makes its waiting deliveries due now.
pub(super) async fn resume(
    services: &Services,
    channel: alert_channels::Model,
) -> Result<alert_channels::Model> {
    alert_deliveries::Entity::update_many()
        .col_expr(
            alert_deliveries::Column::NextAttemptAt,
            Expr::value(Utc::now()),
        )
        .filter(alert_deliveries::Column::ChannelUuid.eq(channel.uuid))
        .filter(alert_deliveries::Column::Status.eq(PENDING))
        .exec(services.db())
        .await?;
    let mut active = channel.into_active_model();
    active.paused = Set(false);
    active.paused_reason = Set(None);
    active.failures = Set(0);
    active.updated_at = Set(Utc::now());
    Ok(active.update(services.db()).await?)
}

/// A webhook address that passed the SSRF policy when it was stored. Transports check it again at every
/// connect (a name may resolve elsewhere by then).
#[derive(Debug, Clone)]
pub struct WebhookUrl(Url);

fn refused(host: &str) -> Error {
    Error::Validation(InvalidValue {
        field: "url",
        message: format!(
            "{host} resolves to a loopback or private address; an admin can allow such addresses with \
             allow_local_remotes (PEPEUNIT_ALLOW_LOCAL_REMOTES)"
        ),
    })
}

/// Whether every address is allowed under the policy.
pub fn addresses_allowed(addresses: &[IpAddr], allow_local: bool) -> bool {
    !addresses.is_empty()
        && (allow_local
            || !addresses
                .iter()
                .any(|ip| pepeunit_repositories::remote::is_internal(*ip)))
}

impl WebhookUrl {
    /// Parses `raw` (http or https, no credentials) and resolves its host under the policy.
    pub async fn parse(raw: &str, allow_local: bool) -> Result<Self> {
        let bad = |message: &str| {
            Error::Validation(InvalidValue {
                field: "url",
                message: message.to_owned(),
            })
        };
        if raw.len() > 2048 {
            return Err(bad("must be at most 2048 characters"));
        }
        let url = Url::parse(raw.trim()).map_err(|e| bad(&format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must be an http or https URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry credentials"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad("has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
            .map(|a| a.ip())
            .collect();
        if !addresses_allowed(&addresses, allow_local) {
            return Err(refused(&host));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}
