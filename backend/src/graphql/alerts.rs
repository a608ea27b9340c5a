//! Alert rules, channels (Telegram chats, webhooks) and the alert history in GraphQL.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Duration, Utc};

use crate::entities::{alert_channels, alert_rules, alerts};
use crate::error::GqlResult;
use crate::graphql::{actor, parse_uuid, services};
use crate::services::alerts::{self as service, NewRule, RuleKind};

/// What a rule watches.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum AlertRuleKind {
    /// An output's numeric value above `threshold`.
    Above,
    /// An output's numeric value below `threshold`.
    Below,
    /// The unit disconnected for longer than `timeoutSeconds`.
    Offline,
    /// The unit reported a failed update.
    UpdateFailed,
    /// No value from an output for longer than `timeoutSeconds`.
    NoValue,
    /// A rollout of the repo_unit halted.
    RolloutHalted,
}

impl From<AlertRuleKind> for RuleKind {
    fn from(kind: AlertRuleKind) -> Self {
        match kind {
            AlertRuleKind::Above => RuleKind::Above,
            AlertRuleKind::Below => RuleKind::Below,
            AlertRuleKind::Offline => RuleKind::Offline,
            AlertRuleKind::UpdateFailed => RuleKind::UpdateFailed,
            AlertRuleKind::NoValue => RuleKind::NoValue,
            AlertRuleKind::RolloutHalted => RuleKind::RolloutHalted,
        }
    }
}

/// An alert rule.
#[derive(SimpleObject)]
pub struct AlertRule {
    uuid: ID,
    kind: String,
    unit_uuid: Option<ID>,
    node_uuid: Option<ID>,
    repo_unit_uuid: Option<ID>,
    threshold: Option<f64>,
    hysteresis: f64,
    min_duration_seconds: i32,
    cooldown_seconds: i32,
    timeout_seconds: Option<i32>,
    muted_until: Option<DateTime<Utc>>,
    /// `normal` or `firing`.
    state: String,
    last_fired_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

fn id(uuid: uuid::Uuid) -> ID {
    ID(uuid.to_string())
}

impl From<alert_rules::Model> for AlertRule {
    fn from(row: alert_rules::Model) -> Self {
        Self {
            uuid: id(row.uuid),
            kind: row.kind,
            unit_uuid: row.unit_uuid.map(id),
            node_uuid: row.node_uuid.map(id),
            repo_unit_uuid: row.repo_unit_uuid.map(id),
            threshold: row.threshold,
            hysteresis: row.hysteresis,
            min_duration_seconds: row.min_duration_seconds,
            cooldown_seconds: row.cooldown_seconds,
            timeout_seconds: row.timeout_seconds,
            muted_until: row.muted_until,
            state: row.state,
            last_fired_at: row.last_fired_at,
            created_at: row.created_at,
        }
    }
}

/// Where alerts go. Secrets (a webhook's signing secret) are never shown after creation.
#[derive(SimpleObject)]
pub struct AlertChannel {
    uuid: ID,
    /// `telegram` or `webhook`.
    kind: String,
    telegram_chat_id: Option<i64>,
    webhook_url: Option<String>,
    /// Paused after failing too often (or for good, e.g. the bot was blocked); alerts wait meanwhile.
    paused: bool,
    paused_reason: Option<String>,
    failures: i32,
    created_at: DateTime<Utc>,
    /// For a webhook: the variables (node uuids) whose every value it receives (`setWebhookVariables`).
    value_node_uuids: Vec<ID>,
    /// Values POSTed to the webhook since the server started (or since it last had no variables).
    values_sent: u64,
    /// Values the webhook missed since then: its queue was full, or it kept refusing them.
    values_dropped: u64,
}

impl AlertChannel {
    /// The channel with its chosen variables and value counters.
    async fn load(
        services: &crate::services::Services,
        row: alert_channels::Model,
    ) -> Result<Self> {
        let nodes = service::values::variables(services, row.uuid).await.gql()?;
        let (sent, dropped) = services.alerts().value_counters(row.uuid);
        let mut channel = Self::from(row);
        channel.value_node_uuids = nodes.into_iter().map(id).collect();
        channel.values_sent = sent;
        channel.values_dropped = dropped;
        Ok(channel)
    }
}

impl From<alert_channels::Model> for AlertChannel {
    fn from(row: alert_channels::Model) -> Self {
        Self {
            uuid: id(row.uuid),
            kind: row.kind,
            telegram_chat_id: row.telegram_chat_id,
            webhook_url: row.webhook_url,
            paused: row.paused,
            paused_reason: row.paused_reason,
            failures: row.failures,
            created_at: row.created_at,
            value_node_uuids: Vec::new(),
            values_sent: 0,
            values_dropped: 0,
        }
    }
}

/// An alert that fired or resolved.
#[derive(SimpleObject)]
pub struct Alert {
    uuid: ID,
    /// `fired` or `resolved`.
    kind: String,
    rule_uuid: Option<ID>,
    rule_kind: String,
    unit_uuid: Option<ID>,
    unit_name: Option<String>,
    variable: Option<String>,
    value: Option<String>,
    message: String,
    /// The rule was muted: the alert went to the history only.
    muted: bool,
    created_at: DateTime<Utc>,
}

impl From<alerts::Model> for Alert {
    fn from(row: alerts::Model) -> Self {
        Self {
            uuid: id(row.uuid),
            kind: row.kind,
            rule_uuid: row.rule_uuid.map(id),
            rule_kind: row.rule_kind,
            unit_uuid: row.unit_uuid.map(id),
            unit_name: row.unit_name,
            variable: row.variable,
            value: row.value,
            message: row.message,
            muted: row.muted,
            created_at: row.created_at,
        }
    }
}

/// A one-time code that links a Telegram chat: send `/start <code>` to the bot.
#[derive(SimpleObject)]
pub struct TelegramLinkCode {
    code: String,
    expires_at: DateTime<Utc>,
    /// `https://t.me/<bot>?start=<code>`, once the bot's name is known.
    deep_link: Option<String>,
}

/// A new webhook and its signing secret, shown this once.
#[derive(SimpleObject)]
pub struct CreatedWebhook {
    channel: AlertChannel,
    /// Key of the HMAC-SHA256 in `X-Pepeunit-Signature`.
    secret: String,
}

#[derive(InputObject)]
pub struct CreateAlertRuleInput {
    kind: AlertRuleKind,
    /// The unit, for `OFFLINE` and `UPDATE_FAILED`.
    unit_uuid: Option<ID>,
    /// The output, for `ABOVE`, `BELOW` and `NO_VALUE`.
    node_uuid: Option<ID>,
    /// The repo_unit, for `ROLLOUT_HALTED`.
    repo_unit_uuid: Option<ID>,
    threshold: Option<f64>,
    /// How far back past the threshold the value must come to count as normal again [default: 0].
    #[graphql(default)]
    hysteresis: f64,
    /// How long the value must stay past the threshold before the alert fires [default: 0].
    #[graphql(default)]
    min_duration_seconds: i32,
    /// The least time between two alerts of this rule [default: 0].
    #[graphql(default)]
    cooldown_seconds: i32,
    /// For `OFFLINE` and `NO_VALUE`.
    timeout_seconds: Option<i32>,
}

#[derive(Default)]
pub struct AlertQuery;

#[Object]
impl AlertQuery {
    /// The caller's alert rules.
    async fn alert_rules(&self, ctx: &Context<'_>) -> Result<Vec<AlertRule>> {
        let rows = service::rules(services(ctx)?, &actor(ctx)).await.gql()?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The caller's alert channels.
    async fn alert_channels(&self, ctx: &Context<'_>) -> Result<Vec<AlertChannel>> {
        let services = services(ctx)?;
        let rows = service::channels(services, &actor(ctx)).await.gql()?;
        let mut channels = Vec::with_capacity(rows.len());
        for row in rows {
            channels.push(AlertChannel::load(services, row).await?);
        }
        Ok(channels)
    }

    /// The caller's alerts, newest first.
    #[graphql(complexity = "super::list_cost(limit, child_complexity, 1)")]
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: u64,
    ) -> Result<Vec<Alert>> {
        let rows = service::history(services(ctx)?, &actor(ctx), limit)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

#[derive(Default)]
pub struct AlertMutation;

fn optional_uuid(id: Option<ID>) -> Result<Option<uuid::Uuid>> {
    id.map(|id| parse_uuid(&id)).transpose().gql()
}

#[Object]
impl AlertMutation {
    /// Creates an alert rule on something the caller may see.
    async fn create_alert_rule(
        &self,
        ctx: &Context<'_>,
        input: CreateAlertRuleInput,
    ) -> Result<AlertRule> {
        let rule = NewRule {
            kind: input.kind.into(),
            unit: optional_uuid(input.unit_uuid)?,
            node: optional_uuid(input.node_uuid)?,
            repo_unit: optional_uuid(input.repo_unit_uuid)?,
            threshold: input.threshold,
            hysteresis: input.hysteresis,
            min_duration_seconds: input.min_duration_seconds,
            cooldown_seconds: input.cooldown_seconds,
            timeout_seconds: input.timeout_seconds,
        };
        Ok(service::create_rule(services(ctx)?, &actor(ctx), rule)
            .await
            .gql()?
            .into())
    }

    async fn delete_alert_rule(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::delete_rule(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }

    /// Mutes a rule for `minutes` (its alerts go to the history only); 0 unmutes it.
    async fn mute_alert_rule(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        minutes: u32,
    ) -> Result<AlertRule> {
        let uuid = parse_uuid(&uuid).gql()?;
        let until = (minutes > 0)
            .then(|| Utc::now() + Duration::minutes(i64::from(minutes.min(366 * 24 * 60))));
        Ok(service::mute_rule(services(ctx)?, &actor(ctx), uuid, until)
            .await
            .gql()?
            .into())
    }

    /// A one-time code to link a Telegram chat (valid for 10 minutes; an earlier one stops working).
    async fn create_telegram_link_code(&self, ctx: &Context<'_>) -> Result<TelegramLinkCode> {
        let services = services(ctx)?;
        let (code, expires_at) = service::create_link_code(services, &actor(ctx))
            .await
            .gql()?;
        let deep_link = services
            .alerts()
            .settings()
            .bot_username
            .get()
            .map(|bot| format!("https://t.me/{bot}?start={code}"));
        Ok(TelegramLinkCode {
            code,
            expires_at,
            deep_link,
        })
    }

    /// Adds a webhook channel: alerts are POSTed to `url` as JSON, signed with the secret returned here.
    async fn create_webhook_channel(
        &self,
        ctx: &Context<'_>,
        url: String,
    ) -> Result<CreatedWebhook> {
        let (channel, secret) = service::create_webhook(services(ctx)?, &actor(ctx), &url)
            .await
            .gql()?;
        Ok(CreatedWebhook {
            channel: channel.into(),
            secret,
        })
    }

    async fn delete_alert_channel(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::delete_channel(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }

    /// Resumes a paused channel; the alerts that waited are sent at once.
    async fn resume_alert_channel(&self, ctx: &Context<'_>, uuid: ID) -> Result<AlertChannel> {
        let uuid = parse_uuid(&uuid).gql()?;
        let services = services(ctx)?;
        let row = service::resume_channel(services, &actor(ctx), uuid)
            .await
            .gql()?;
        AlertChannel::load(services, row).await
    }

    /// Chooses the variables (at most 50, each one the caller may see) whose every value the webhook
    /// `uuid` is POSTed, in signed batches; replaces the earlier choice (an empty list stops it).
    async fn set_webhook_variables(
        &self,
        ctx: &Context<'_>,
        uuid: ID,
        node_uuids: Vec<ID>,
    ) -> Result<AlertChannel> {
        let uuid = parse_uuid(&uuid).gql()?;
        let nodes = node_uuids
            .iter()
            .map(parse_uuid)
            .collect::<std::result::Result<Vec<_>, _>>()
            .gql()?;
        let services = services(ctx)?;
        let row = service::values::set_variables(services, &actor(ctx), uuid, nodes)
            .await
            .gql()?;
        AlertChannel::load(services, row).await
    }
}
