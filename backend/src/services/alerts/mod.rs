//! Alerts: rules a user sets on what they may see, the channels alerts reach them by, and the history.
//!
//! What happens to units reaches the [`evaluate`] task as [`Observation`]s through a bounded channel that
//! producers never wait on (ingestion hands over a value only when a rule watches its variable). A rule's
//! change of state, the alert it fires and one outbox row per channel of the rule's owner are written in
//! one transaction; [`deliver`] sends the outbox through whichever transports the server runs (the
//! Telegram bot, webhooks), which this module never knows beyond the [`deliver::AlertTransport`] trait.

pub mod deliver;
pub mod evaluate;
pub mod values;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use chrono::{DateTime, Duration, Utc};
use prometheus_client::metrics::counter::Counter;
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{InvalidValue, UserStatus};
use crate::entities::{
    alert_channels, alert_rules, alerts, repo_units, telegram_link_codes, units, users,
};
use crate::error::{Error, Result};
use crate::services::units::links::visible_node;
use crate::services::units::nodes::NodeKind;
use crate::services::{Actor, AuthUser, Services, access};

/// Observations waiting for the evaluator; past this, values are dropped (and counted), never waited on.
const QUEUE: usize = 16_384;
/// How long a link code is valid.
const LINK_CODE_TTL_MINUTES: i64 = 10;
/// The longest duration, timeout or cooldown a rule may have: a week.
const MAX_SECONDS: i32 = 7 * 86_400;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// An output's numeric value above the threshold.
    Above,
    /// An output's numeric value below the threshold.
    Below,
    /// The unit has no broker connection for longer than the timeout.
    Offline,
    /// The unit reports (`pu_update_failure` in its state) that an update failed.
    UpdateFailed,
    /// No value from an output for longer than the timeout.
    NoValue,
    /// A rollout of the repo_unit halted.
    RolloutHalted,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Above => "above",
            RuleKind::Below => "below",
            RuleKind::Offline => "offline",
            RuleKind::UpdateFailed => "update_failed",
            RuleKind::NoValue => "no_value",
            RuleKind::RolloutHalted => "rollout_halted",
        }
    }
}

impl FromStr for RuleKind {
    type Err = InvalidValue;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "above" => RuleKind::Above,
            "below" => RuleKind::Below,
            "offline" => RuleKind::Offline,
            "update_failed" => RuleKind::UpdateFailed,
            "no_value" => RuleKind::NoValue,
            "rollout_halted" => RuleKind::RolloutHalted,
            _ => {
                return Err(InvalidValue {
                    field: "kind",
                    message:
                        "must be above, below, offline, update_failed, no_value or rollout_halted"
                            .into(),
                });
            }
        })
    }
}

/// Where alerts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Telegram,
    Webhook,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Telegram => "telegram",
            ChannelKind::Webhook => "webhook",
        }
    }

    pub fn of(channel: &alert_channels::Model) -> Option<Self> {
        match channel.kind.as_str() {
            "telegram" => Some(ChannelKind::Telegram),
            "webhook" => Some(ChannelKind::Webhook),
            _ => None,
        }
    }
}

/// A rule's persisted state.
pub const NORMAL: &str = "normal";
pub const FIRING: &str = "firing";
/// An alert's kind: the condition began, ended, or (events without an end) happened.
pub const FIRED: &str = "fired";
pub const RESOLVED: &str = "resolved";

/// Something that happened that rules may be watching.
#[derive(Debug)]
pub enum Observation {
    Value {
        unit: Uuid,
        node: Uuid,
        value: String,
        at: DateTime<Utc>,
    },
    Presence {
        unit: Uuid,
        online: bool,
        at: DateTime<Utc>,
    },
    /// A `state/pepeunit` payload, as published.
    State { unit: Uuid, payload: Vec<u8> },
    RolloutHalted {
        rollout: Uuid,
        repo_unit: Uuid,
        detail: String,
    },
    /// Rules were created, changed or deleted: reload them, then answer.
    RulesChanged(Option<oneshot::Sender<()>>),
}

/// Values not evaluated because the evaluator's queue was full (`/metrics`).
pub static OBSERVATIONS_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// What rules currently watch, so producers hand over only what matters.
#[derive(Default)]
struct Watched {
    nodes: HashSet<Uuid>,
    units: HashSet<Uuid>,
    /// The webhooks that receive every value of a node ([`values`]).
    hooks: HashMap<Uuid, Vec<Arc<values::HookQueue>>>,
}

/// The limits on alerting.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub rules_per_user: u32,
    pub webhooks_per_user: u32,
    pub channel_max_failures: u32,
    /// Webhooks may point at loopback and private addresses (`allow_local_remotes`).
    pub allow_local_webhooks: bool,
    /// The bot's username, for deep links; set once the bot knows it.
    pub bot_username: std::sync::OnceLock<String>,
}

/// The alerting handle every producer and the API use.
pub struct Alerting {
    sender: mpsc::Sender<Observation>,
    receiver: Mutex<Option<mpsc::Receiver<Observation>>>,
    watched: RwLock<Watched>,
    outbox: Notify,
    settings: AlertSettings,
    /// Each webhook's value queue, kept across reloads so its counters survive them.
    hook_queues: Mutex<HashMap<Uuid, Arc<values::HookQueue>>>,
    hooks_changed: Notify,
}

impl Alerting {
    pub fn new(config: &Config) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            watched: RwLock::default(),
            outbox: Notify::new(),
            settings: AlertSettings {
                rules_per_user: config.alert_rules_per_user,
                webhooks_per_user: config.alert_webhooks_per_user,
                channel_max_failures: config.alert_channel_max_failures,
                allow_local_webhooks: config.allow_local_remotes,
                bot_username: std::sync::OnceLock::new(),
            },
            hook_queues: Mutex::default(),
            hooks_changed: Notify::new(),
        }
    }

    /// The value queue of webhook `channel`, made if it has none.
    fn hook_queue(&self, channel: Uuid) -> Arc<values::HookQueue> {
        self.hook_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(channel)
            .or_insert_with(|| Arc::new(values::HookQueue::new(channel)))
            .clone()
    }

    /// Who receives which node's values from now on.
    fn set_hooks(&self, hooks: HashMap<Uuid, Vec<Arc<values::HookQueue>>>) {
        let active: HashSet<Uuid> = hooks.values().flatten().map(|q| q.channel()).collect();
        self.hook_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|channel, _| active.contains(channel));
        self.watched
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .hooks = hooks;
    }

    /// Wakes the values worker: webhooks' choices changed.
    fn wake_values(&self) {
        self.hooks_changed.notify_one();
    }

    /// The queues of the webhooks that receive values now.
    fn active_hook_queues(&self) -> Vec<Arc<values::HookQueue>> {
        self.hook_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    async fn hooks_notified(&self) {
        self.hooks_changed.notified().await;
    }

    /// Values POSTed and dropped (since the server started) of webhook `channel`.
    pub fn value_counters(&self, channel: Uuid) -> (u64, u64) {
        self.hook_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&channel)
            .map_or((0, 0), |q| q.counters())
    }

    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// The evaluator's end of the queue; `None` once taken.
    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<Observation>> {
        self.receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn watched(&self) -> std::sync::RwLockReadGuard<'_, Watched> {
        self.watched.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_watched(&self, nodes: HashSet<Uuid>, units: HashSet<Uuid>) {
        let mut watched = self.watched.write().unwrap_or_else(|e| e.into_inner());
        watched.nodes = nodes;
        watched.units = units;
    }

    /// Hands a committed value to the evaluator if a rule watches its variable, and to the webhooks that
    /// receive its every value; never waits (a full queue drops it and counts it: in
    /// [`OBSERVATIONS_DROPPED`], or in the webhook's `valuesDropped`).
    pub fn observe_value(&self, unit: Uuid, node: Uuid, payload: &[u8], at: DateTime<Utc>) {
        let watched = self.watched();
        let ruled = watched.nodes.contains(&node);
        let hooks = watched.hooks.get(&node);
        if !ruled && hooks.is_none() {
            return;
        }
        let value = String::from_utf8_lossy(payload).into_owned();
        for hook in hooks.into_iter().flatten() {
            hook.push(values::Sample {
                unit,
                node,
                value: value.clone(),
                at,
            });
        }
        drop(watched);
        if !ruled {
            return;
        }
        if self
            .sender
            .try_send(Observation::Value {
                unit,
                node,
                value,
                at,
            })
            .is_err()
        {
            OBSERVATIONS_DROPPED.inc();
        }
    }

    /// Hands a committed `state/pepeunit` payload over if a rule watches the unit.
    pub fn observe_state(&self, unit: Uuid, payload: &[u8]) {
        if self.watched().units.contains(&unit) {
            self.send_rare(Observation::State {
                unit,
                payload: payload.to_vec(),
            });
        }
    }

    /// A unit's first connection opened or its last one closed.
    pub fn observe_presence(&self, unit: Uuid, online: bool) {
        if self.watched().units.contains(&unit) {
            self.send_rare(Observation::Presence {
                unit,
                online,
                at: Utc::now(),
            });
        }
    }

    /// A rollout halted.
    pub fn observe_rollout_halted(&self, rollout: Uuid, repo_unit: Uuid, detail: &str) {
        self.send_rare(Observation::RolloutHalted {
            rollout,
            repo_unit,
            detail: detail.to_owned(),
        });
    }

    /// Events that are rare and must not be lost to a full queue wait for room in a task of their own, so
    /// the caller still never waits.
    fn send_rare(&self, observation: Observation) {
        if let Err(mpsc::error::TrySendError::Full(observation)) = self.sender.try_send(observation)
        {
            let sender = self.sender.clone();
            tokio::spawn(async move {
                let _ = sender.send(observation).await;
            });
        }
    }

    /// Has the evaluator reload the rules and waits (a few seconds at most) until it has, so a rule is
    /// in force when the call that made it returns.
    async fn rules_changed(&self) {
        let (done, reloaded) = oneshot::channel();
        self.send_rare(Observation::RulesChanged(Some(done)));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), reloaded).await;
    }

    /// Wakes the delivery worker: the outbox has new rows.
    pub(crate) fn outbox_changed(&self) {
        self.outbox.notify_one();
    }

    pub(crate) async fn outbox_notified(&self) {
        self.outbox.notified().await;
    }
}

/// A rule as a user asks for it.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub kind: RuleKind,
    pub unit: Option<Uuid>,
    pub node: Option<Uuid>,
    pub repo_unit: Option<Uuid>,
    pub threshold: Option<f64>,
    pub hysteresis: f64,
    pub min_duration_seconds: i32,
    pub cooldown_seconds: i32,
    pub timeout_seconds: Option<i32>,
}

fn invalid(field: &'static str, message: &str) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.to_owned(),
    })
}

/// Creates a rule on something `actor` may see.
pub async fn create_rule(
    services: &Services,
    actor: &Actor,
    rule: NewRule,
) -> Result<alert_rules::Model> {
    let user = actor.require_user()?;
    let seconds_ok = |s: i32| (0..=MAX_SECONDS).contains(&s);
    if !seconds_ok(rule.min_duration_seconds) {
        return Err(invalid("minDurationSeconds", "must be 0 to 604800"));
    }
    if !seconds_ok(rule.cooldown_seconds) {
        return Err(invalid("cooldownSeconds", "must be 0 to 604800"));
    }
    if !rule.hysteresis.is_finite() || rule.hysteresis < 0.0 {
        return Err(invalid("hysteresis", "must be a number of at least 0"));
    }
    let (mut unit, mut node, mut repo_unit) = (None, None, None);
    match rule.kind {
        RuleKind::Above | RuleKind::Below | RuleKind::NoValue => {
            let uuid = rule
                .node
                .ok_or_else(|| invalid("nodeUuid", "this kind of rule needs an output"))?;
            let (found, owner) = visible_node(services, actor, uuid).await?;
            if NodeKind::of(&found) != NodeKind::Output {
                return Err(invalid("nodeUuid", "is not an output"));
            }
            unit = Some(owner.uuid);
            node = Some(found.uuid);
        }
        RuleKind::Offline | RuleKind::UpdateFailed => {
            let uuid = rule
                .unit
                .ok_or_else(|| invalid("unitUuid", "this kind of rule needs a unit"))?;
            let found =
                access::find_visible::<units::Entity>(services.db(), actor, uuid, "unit").await?;
            unit = Some(found.uuid);
        }
        RuleKind::RolloutHalted => {
            let uuid = rule
                .repo_unit
                .ok_or_else(|| invalid("repoUnitUuid", "this kind of rule needs a repo_unit"))?;
            let found =
                access::find_visible::<repo_units::Entity>(services.db(), actor, uuid, "repo_unit")
                    .await?;
            repo_unit = Some(found.uuid);
        }
    }
    if matches!(rule.kind, RuleKind::Above | RuleKind::Below)
        && !rule.threshold.is_some_and(f64::is_finite)
    {
        return Err(invalid("threshold", "this kind of rule needs a threshold"));
    }
    let timeout = match rule.kind {
        RuleKind::Offline | RuleKind::NoValue => {
            let timeout = rule
                .timeout_seconds
                .ok_or_else(|| invalid("timeoutSeconds", "this kind of rule needs a timeout"))?;
            if !(1..=MAX_SECONDS).contains(&timeout) {
                return Err(invalid("timeoutSeconds", "must be 1 to 604800"));
            }
            Some(timeout)
        }
        _ => None,
    };
    let owner = user.id.as_uuid();
    let count = alert_rules::Entity::find()
        .filter(alert_rules::Column::UserUuid.eq(owner))
        .count(services.db())
        .await?;
    let limit = services.alerts().settings().rules_per_user;
    if count >= u64::from(limit) {
        return Err(invalid(
            "kind",
            &format!("a user may have at most {limit} alert rules"),
        ));
    }
    let now = Utc::now();
    let row = alert_rules::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        user_uuid: Set(owner),
        kind: Set(rule.kind.as_str().to_owned()),
        unit_uuid: Set(unit),
        node_uuid: Set(node),
        repo_unit_uuid: Set(repo_unit),
        threshold: Set(rule
            .threshold
            .filter(|_| matches!(rule.kind, RuleKind::Above | RuleKind::Below))),
        hysteresis: Set(rule.hysteresis),
        min_duration_seconds: Set(rule.min_duration_seconds),
        cooldown_seconds: Set(rule.cooldown_seconds),
        timeout_seconds: Set(timeout),
        muted_until: Set(None),
        state: Set(NORMAL.to_owned()),
        last_fired_at: Set(None),
        last_detail: Set(None),
        updated_at: Set(now),
        created_at: Set(now),
    }
    .insert(services.db())
    .await?;
    services.alerts().rules_changed().await;
    Ok(row)
}

/// The caller's rules, newest first.
pub async fn rules(services: &Services, actor: &Actor) -> Result<Vec<alert_rules::Model>> {
    let user = actor.require_user()?;
    Ok(alert_rules::Entity::find()
        .filter(alert_rules::Column::UserUuid.eq(user.id.as_uuid()))
        .order_by_desc(alert_rules::Column::CreatedAt)
        .all(services.db())
        .await?)
}

async fn own_rule(services: &Services, actor: &Actor, uuid: Uuid) -> Result<alert_rules::Model> {
    let user = actor.require_user()?;
    alert_rules::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .filter(|rule| rule.user_uuid == user.id.as_uuid())
        .ok_or(Error::NotFound("alert_rule"))
}

/// Deletes one of the caller's rules.
pub async fn delete_rule(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let rule = own_rule(services, actor, uuid).await?;
    alert_rules::Entity::delete_by_id(rule.uuid)
        .exec(services.db())
        .await?;
    services.alerts().rules_changed().await;
    Ok(())
}

/// Mutes a rule until `until` (its alerts go to the history only), or unmutes it with `None`.
pub async fn mute_rule(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
    until: Option<DateTime<Utc>>,
) -> Result<alert_rules::Model> {
    let rule = own_rule(services, actor, uuid).await?;
    let mut active = rule.into_active_model();
    active.muted_until = Set(until);
    active.updated_at = Set(Utc::now());
    let row = active.update(services.db()).await?;
    services.alerts().rules_changed().await;
    Ok(row)
}

/// The caller's alert history, newest first.
pub async fn history(services: &Services, actor: &Actor, limit: u64) -> Result<Vec<alerts::Model>> {
    let user = actor.require_user()?;
    Ok(alerts::Entity::find()
        .filter(alerts::Column::UserUuid.eq(user.id.as_uuid()))
        .order_by_desc(alerts::Column::CreatedAt)
        .limit(limit.clamp(1, 1000))
        .all(services.db())
        .await?)
}

/// The caller's channels.
pub async fn channels(services: &Services, actor: &Actor) -> Result<Vec<alert_channels::Model>> {
    let user = actor.require_user()?;
    Ok(alert_channels::Entity::find()
        .filter(alert_channels::Column::UserUuid.eq(user.id.as_uuid()))
        .order_by_asc(alert_channels::Column::CreatedAt)
        .all(services.db())
        .await?)
}

async fn own_channel(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
) -> Result<alert_channels::Model> {
    let user = actor.require_user()?;
    alert_channels::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .filter(|channel| channel.user_uuid == user.id.as_uuid())
        .ok_or(Error::NotFound("alert_channel"))
}

/// Removes a channel; its undelivered alerts go with it.
pub async fn delete_channel(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let channel = own_channel(services, actor, uuid).await?;
    alert_channels::Entity::delete_by_id(channel.uuid)
        .exec(services.db())
        .await?;
    values::reload(services).await?;
    services.alerts().wake_values();
    Ok(())
}

/// Resumes a paused channel: its waiting alerts are sent again at once.
pub async fn resume_channel(
    services: &Services,
    actor: &Actor,
    uuid: Uuid,
) -> Result<alert_channels::Model> {
    let channel = own_channel(services, actor, uuid).await?;
    let row = deliver::resume(services, channel).await?;
    services.alerts().outbox_changed();
    Ok(row)
}

fn hash_code(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().as_bytes()))
}

/// A new one-time code that links a Telegram chat to the caller (`/start <code>`); an earlier unused
/// code of the caller stops working.
pub async fn create_link_code(
    services: &Services,
    actor: &Actor,
) -> Result<(String, DateTime<Utc>)> {
    let user = actor.require_user()?;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let code = hex::encode(bytes);
    let now = Utc::now();
    let expires = now + Duration::minutes(LINK_CODE_TTL_MINUTES);
    telegram_link_codes::Entity::delete_many()
        .filter(telegram_link_codes::Column::UserUuid.eq(user.id.as_uuid()))
        .exec(services.db())
        .await?;
    telegram_link_codes::ActiveModel {
        code_hash: Set(hash_code(&code)),
        user_uuid: Set(user.id.as_uuid()),
        expires_at: Set(expires),
        created_at: Set(now),
    }
    .insert(services.db())
    .await?;
    Ok((code, expires))
}

/// Links `chat` to the user whose code this is; the code works once. A chat linked before moves to that
/// user.
pub async fn link_chat(services: &Services, code: &str, chat: i64) -> Result<users::Model> {
    let refused = || Error::Forbidden("this code is not valid, expired or was already used".into());
    let hash = hash_code(code);
    let row = telegram_link_codes::Entity::find_by_id(hash.clone())
        .one(services.db())
        .await?
        .ok_or_else(refused)?;
    // Deleting is what spends the code: of two racing uses, one deletes the row.
    let spent = telegram_link_codes::Entity::delete_many()
        .filter(telegram_link_codes::Column::CodeHash.eq(hash))
        .exec(services.db())
        .await?
        .rows_affected;
    if spent != 1 || row.expires_at < Utc::now() {
        return Err(refused());
    }
    let user = users::Entity::find_by_id(row.user_uuid)
        .one(services.db())
        .await?
        .filter(|u| u.status == UserStatus::Verified)
        .ok_or_else(refused)?;
    let now = Utc::now();
    match alert_channels::Entity::find()
        .filter(alert_channels::Column::TelegramChatId.eq(chat))
        .one(services.db())
        .await?
    {
        Some(existing) => {
            let mut active = existing.into_active_model();
            active.user_uuid = Set(user.uuid);
            active.paused = Set(false);
            active.paused_reason = Set(None);
            active.failures = Set(0);
            active.updated_at = Set(now);
            active.update(services.db()).await?;
        }
        None => {
            alert_channels::ActiveModel {
                uuid: Set(Uuid::new_v4()),
                user_uuid: Set(user.uuid),
                kind: Set(ChannelKind::Telegram.as_str().to_owned()),
                telegram_chat_id: Set(Some(chat)),
                webhook_url: Set(None),
                webhook_secret_encrypted: Set(None),
                paused: Set(false),
                paused_reason: Set(None),
                failures: Set(0),
                updated_at: Set(now),
                created_at: Set(now),
            }
            .insert(services.db())
            .await
            .map_err(|e| Error::on_unique(e, "this chat is already linked"))?;
        }
    }
    Ok(user)
}

/// The actor a user acts as outside a request (the bot, the evaluator); `None` if they may not log in.
pub async fn user_actor(services: &Services, user: Uuid) -> Result<Option<(Actor, users::Model)>> {
    let user = users::Entity::find_by_id(user)
        .one(services.db())
        .await?
        .filter(|u| u.status == UserStatus::Verified);
    Ok(user.map(|user| {
        (
            Actor::User(AuthUser {
                id: user.uuid.into(),
                role: user.role,
            }),
            user,
        )
    }))
}

/// The user a chat is linked to, as the actor commands from that chat run as; `None` if the chat is not
/// linked or the user may no longer log in.
pub async fn chat_actor(services: &Services, chat: i64) -> Result<Option<(Actor, users::Model)>> {
    let Some(channel) = alert_channels::Entity::find()
        .filter(alert_channels::Column::TelegramChatId.eq(chat))
        .one(services.db())
        .await?
    else {
        return Ok(None);
    };
    user_actor(services, channel.user_uuid).await
}

/// Unlinks a chat linked to `actor`; whether it was.
pub async fn unlink_chat(services: &Services, actor: &Actor, chat: i64) -> Result<bool> {
    let user = actor.require_user()?;
    Ok(alert_channels::Entity::delete_many()
        .filter(alert_channels::Column::TelegramChatId.eq(chat))
        .filter(alert_channels::Column::UserUuid.eq(user.id.as_uuid()))
        .exec(services.db())
        .await?
        .rows_affected
        > 0)
}

/// A new webhook channel; returns it and its signing secret, shown this once.
pub async fn create_webhook(
    services: &Services,
    actor: &Actor,
    url: &str,
) -> Result<(alert_channels::Model, String)> {
    let user = actor.require_user()?;
    let url =
        deliver::WebhookUrl::parse(url, services.alerts().settings().allow_local_webhooks).await?;
    let count = alert_channels::Entity::find()
        .filter(alert_channels::Column::UserUuid.eq(user.id.as_uuid()))
        .filter(alert_channels::Column::Kind.eq(ChannelKind::Webhook.as_str()))
        .count(services.db())
        .await?;
    let limit = services.alerts().settings().webhooks_per_user;
    if count >= u64::from(limit) {
        return Err(invalid(
            "url",
            &format!("a user may have at most {limit} webhooks"),
        ));
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let sealed = services
        .master_key()
        .encrypt(secret.as_bytes())
        .map_err(Error::internal)?;
    let now = Utc::now();
    let row = alert_channels::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        user_uuid: Set(user.id.as_uuid()),
        kind: Set(ChannelKind::Webhook.as_str().to_owned()),
        telegram_chat_id: Set(None),
        webhook_url: Set(Some(url.as_str().to_owned())),
        webhook_secret_encrypted: Set(Some(sealed)),
        paused: Set(false),
        paused_reason: Set(None),
        failures: Set(0),
        updated_at: Set(now),
        created_at: Set(now),
    }
    .insert(services.db())
    .await?;
    Ok((row, secret))
}

/// A webhook channel's signing secret, unsealed for the one request that needs it.
pub fn webhook_secret(services: &Services, channel: &alert_channels::Model) -> Result<Vec<u8>> {
    let sealed = channel
        .webhook_secret_encrypted
        .as_deref()
        .ok_or_else(|| Error::internal("webhook without a secret"))?;
    services
        .master_key()
        .decrypt(sealed)
        .map_err(Error::internal)
}
