//! The evaluator: one task that applies observations to the rules, in the order they happened.
//!
//! A threshold rule fires when its output's value has been past the threshold (above or below) for the
//! minimum duration and the cooldown since its last alert has passed, and resolves ("back to normal") only
//! once the value is back by the hysteresis; so a noisy value near the threshold gives one alert, not one
//! per sample. Offline and no-value rules fire after their timeout (checked every second) and resolve when
//! the unit connects or the variable publishes again; update failures and halted rollouts are events, one
//! alert each. Only `normal`/`firing` is stored; since when a condition holds is kept in memory, so after a
//! restart the minimum duration and timeouts count from the start.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pepeunit_protocol::device::{UPDATE_FAILURE_KEY, UpdateFailure};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::deliver::PENDING;
use super::{FIRED, FIRING, NORMAL, Observation, RESOLVED, RuleKind};
use crate::entities::{
    alert_channels, alert_deliveries, alert_rules, alerts, repo_units, unit_nodes, units, users,
};
use crate::error::Result;
use crate::services::{Actor, AuthUser, Services, access};

/// How often durations and timeouts are checked.
const TICK: Duration = Duration::from_secs(1);

/// What a transition writes.
struct Change {
    kind: &'static str,
    state: &'static str,
    value: Option<String>,
    detail: Option<String>,
    message: String,
    at: DateTime<Utc>,
}

struct Evaluator {
    services: Services,
    rules: HashMap<Uuid, alert_rules::Model>,
    by_node: HashMap<Uuid, Vec<Uuid>>,
    by_unit: HashMap<Uuid, Vec<Uuid>>,
    by_repo: HashMap<Uuid, Vec<Uuid>>,
    /// Since when a rule's condition has held (past the threshold, offline), before it fires.
    since: HashMap<Uuid, DateTime<Utc>>,
    /// Each watched output's latest value and its time.
    latest: HashMap<Uuid, (String, DateTime<Utc>)>,
    started: DateTime<Utc>,
}

/// Runs the evaluator until the queue closes.
pub async fn run(services: Services) {
    let Some(receiver) = services.alerts().take_receiver() else {
        return;
    };
    let mut evaluator = Evaluator {
        services,
        rules: HashMap::new(),
        by_node: HashMap::new(),
        by_unit: HashMap::new(),
        by_repo: HashMap::new(),
        since: HashMap::new(),
        latest: HashMap::new(),
        started: Utc::now(),
    };
    evaluator.serve(receiver).await;
}

fn kind(rule: &alert_rules::Model) -> Option<RuleKind> {
    rule.kind.parse().ok()
}

fn variable_name(node: &unit_nodes::Model) -> String {
    node.topic_name
        .strip_suffix("/pepeunit")
        .unwrap_or(&node.topic_name)
        .to_owned()
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

impl Evaluator {
    async fn serve(&mut self, mut receiver: mpsc::Receiver<Observation>) {
        self.reload().await;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                observation = receiver.recv() => {
                    let Some(observation) = observation else { return };
                    if let Err(error) = self.observe(observation).await {
                        tracing::warn!(%error, "evaluating an alert rule failed");
                    }
                }
                _ = ticker.tick() => {
                    if let Err(error) = self.tick(Utc::now()).await {
                        tracing::warn!(%error, "checking alert rules failed");
                    }
                }
            }
        }
    }

    /// Loads every rule and tells producers what to hand over.
    async fn reload(&mut self) {
        let rules = match alert_rules::Entity::find().all(self.services.db()).await {
            Ok(rules) => rules,
            Err(error) => {
                tracing::warn!(%error, "loading alert rules failed");
                return;
            }
        };
        self.rules.clear();
        self.by_node.clear();
        self.by_unit.clear();
        self.by_repo.clear();
        let now = Utc::now();
        let mut nodes = HashSet::new();
        let mut units = HashSet::new();
        for rule in rules {
            if let Some(node) = rule.node_uuid {
                self.by_node.entry(node).or_default().push(rule.uuid);
                nodes.insert(node);
            } else if let Some(unit) = rule.unit_uuid {
                self.by_unit.entry(unit).or_default().push(rule.uuid);
                units.insert(unit);
            } else if let Some(repo) = rule.repo_unit_uuid {
                self.by_repo.entry(repo).or_default().push(rule.uuid);
            }
            // A unit that is not connected now is offline from now on, for a rule that did not know.
            if kind(&rule) == Some(RuleKind::Offline)
                && rule.state == NORMAL
                && let Some(unit) = rule.unit_uuid
                && !self.services.live().is_online(unit)
            {
                self.since.entry(rule.uuid).or_insert(now);
            }
            self.rules.insert(rule.uuid, rule);
        }
        self.since.retain(|rule, _| self.rules.contains_key(rule));
        let missing: Vec<Uuid> = nodes
            .iter()
            .filter(|node| !self.latest.contains_key(node))
            .copied()
            .collect();
        if !missing.is_empty() {
            match unit_nodes::Entity::find()
                .filter(unit_nodes::Column::Uuid.is_in(missing))
                .all(self.services.db())
                .await
            {
                Ok(rows) => {
                    for row in rows {
                        if let (Some(value), Some(at)) = (row.last_value, row.last_value_at) {
                            self.latest.insert(row.uuid, (value, at));
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "loading last values failed"),
            }
        }
        self.latest.retain(|node, _| nodes.contains(node));
        self.services.alerts().set_watched(nodes, units);
    }

    async fn observe(&mut self, observation: Observation) -> Result<()> {
        match observation {
            Observation::RulesChanged(done) => {
                self.reload().await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Observation::Value {
                node, value, at, ..
            } => {
                self.latest.insert(node, (value.clone(), at));
                for rule in self.by_node.get(&node).cloned().unwrap_or_default() {
                    self.on_value(rule, &value, at).await?;
                }
            }
            Observation::Presence { unit, online, at } => {
                for rule in self.by_unit.get(&unit).cloned().unwrap_or_default() {
                    self.on_presence(rule, online, at).await?;
                }
            }
            Observation::State { unit, payload } => {
                let failure = serde_json::from_slice::<serde_json::Value>(&payload)
                    .ok()
                    .and_then(|state| state.get(UPDATE_FAILURE_KEY).cloned())
                    .and_then(|value| serde_json::from_value::<UpdateFailure>(value).ok());
                if let Some(failure) = failure {
                    for rule in self.by_unit.get(&unit).cloned().unwrap_or_default() {
                        self.on_update_failure(rule, &failure).await?;
                    }
                }
            }
            Observation::RolloutHalted {
                rollout,
                repo_unit,
                detail,
            } => {
                for rule in self.by_repo.get(&repo_unit).cloned().unwrap_or_default() {
                    self.on_rollout_halted(rule, rollout, &detail).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether `value` is past the rule's threshold (to fire), and whether it is back by the hysteresis
    /// (to resolve).
    fn judge(rule: &alert_rules::Model, value: f64) -> Option<(bool, bool)> {
        let threshold = rule.threshold?;
        let h = rule.hysteresis;
        match kind(rule)? {
            RuleKind::Above => Some((value > threshold, value <= threshold - h)),
            RuleKind::Below => Some((value < threshold, value >= threshold + h)),
            _ => None,
        }
    }

    async fn on_value(&mut self, uuid: Uuid, value: &str, at: DateTime<Utc>) -> Result<()> {
        let Some(rule) = self.rules.get(&uuid).cloned() else {
            return Ok(());
        };
        match kind(&rule) {
            Some(RuleKind::NoValue) if rule.state == FIRING => {
                let (unit, variable) = self.names(&rule).await?;
                let message = format!(
                    "✅ {unit}: {variable} has values again: {value} at {}",
                    time(at)
                );
                self.transition(
                    &rule,
                    RESOLVED,
                    NORMAL,
                    Some(value.to_owned()),
                    None,
                    message,
                    at,
                )
                .await?;
            }
            Some(RuleKind::Above | RuleKind::Below) => {
                let Some((past, back)) = number(value).and_then(|v| Self::judge(&rule, v)) else {
                    return Ok(());
                };
                if rule.state == FIRING {
                    if back {
                        self.since.remove(&uuid);
                        let (unit, variable) = self.names(&rule).await?;
                        let message = format!(
                            "✅ {unit}: {variable} = {value} is back to normal at {}",
                            time(at)
                        );
                        self.transition(
                            &rule,
                            RESOLVED,
                            NORMAL,
                            Some(value.to_owned()),
                            None,
                            message,
                            at,
                        )
                        .await?;
                    }
                } else if past {
                    self.since.entry(uuid).or_insert(at);
                    self.try_fire_threshold(uuid, Utc::now()).await?;
                } else {
                    self.since.remove(&uuid);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Fires a threshold rule whose value has been past the threshold long enough, outside its cooldown.
    async fn try_fire_threshold(&mut self, uuid: Uuid, now: DateTime<Utc>) -> Result<()> {
        let (Some(rule), Some(since)) = (
            self.rules.get(&uuid).cloned(),
            self.since.get(&uuid).copied(),
        ) else {
            return Ok(());
        };
        if rule.state != NORMAL {
            return Ok(());
        }
        let held = now.signed_duration_since(since).num_milliseconds();
        if held < i64::from(rule.min_duration_seconds) * 1000 {
            return Ok(());
        }
        if let Some(last) = rule.last_fired_at
            && now.signed_duration_since(last).num_seconds() < i64::from(rule.cooldown_seconds)
        {
            return Ok(());
        }
        let Some(node) = rule.node_uuid else {
            return Ok(());
        };
        let Some((value, at)) = self.latest.get(&node).cloned() else {
            return Ok(());
        };
        let (unit, variable) = self.names(&rule).await?;
        let (word, threshold) = match kind(&rule) {
            Some(RuleKind::Below) => ("below", rule.threshold.unwrap_or_default()),
            _ => ("above", rule.threshold.unwrap_or_default()),
        };
        let message = format!(
            "⚠️ {unit}: {variable} = {value} is {word} {threshold} at {}",
            time(at)
        );
        self.since.remove(&uuid);
        self.transition(&rule, FIRED, FIRING, Some(value), None, message, at)
            .await
    }

    async fn on_presence(&mut self, uuid: Uuid, online: bool, at: DateTime<Utc>) -> Result<()> {
        let Some(rule) = self.rules.get(&uuid).cloned() else {
            return Ok(());
        };
        if kind(&rule) != Some(RuleKind::Offline) {
            return Ok(());
        }
        if online {
            self.since.remove(&uuid);
            if rule.state == FIRING {
                let (unit, _) = self.names(&rule).await?;
                let message = format!("✅ {unit} is back online at {}", time(at));
                self.transition(&rule, RESOLVED, NORMAL, None, None, message, at)
                    .await?;
            }
        } else if rule.state == NORMAL {
            self.since.entry(uuid).or_insert(at);
        }
        Ok(())
    }

    async fn on_update_failure(&mut self, uuid: Uuid, failure: &UpdateFailure) -> Result<()> {
        let Some(rule) = self.rules.get(&uuid).cloned() else {
            return Ok(());
        };
        // One alert per failed commit: the unit repeats its state until it updates.
        if kind(&rule) != Some(RuleKind::UpdateFailed)
            || rule.last_detail.as_deref() == Some(failure.commit.as_str())
        {
            return Ok(());
        }
        let (unit, _) = self.names(&rule).await?;
        let reason: String = failure.reason.chars().take(300).collect();
        let now = Utc::now();
        let message = format!(
            "⚠️ {unit}: the update to {} failed at {}: {reason}",
            failure.commit.chars().take(12).collect::<String>(),
            time(now)
        );
        self.transition(
            &rule,
            FIRED,
            NORMAL,
            None,
            Some(failure.commit.clone()),
            message,
            now,
        )
        .await
    }

    async fn on_rollout_halted(&mut self, uuid: Uuid, rollout: Uuid, detail: &str) -> Result<()> {
        let Some(rule) = self.rules.get(&uuid).cloned() else {
            return Ok(());
        };
        let rollout_id = rollout.to_string();
        if kind(&rule) != Some(RuleKind::RolloutHalted)
            || rule.last_detail.as_deref() == Some(rollout_id.as_str())
        {
            return Ok(());
        }
        let repo = match rule.repo_unit_uuid {
            Some(repo) => repo_units::Entity::find_by_id(repo)
                .one(self.services.db())
                .await?
                .map(|r| r.name)
                .unwrap_or_default(),
            None => String::new(),
        };
        let now = Utc::now();
        let detail: String = detail.chars().take(300).collect();
        let message = format!("⚠️ the rollout of {repo} halted at {}: {detail}", time(now));
        self.transition(&rule, FIRED, NORMAL, None, Some(rollout_id), message, now)
            .await
    }

    /// Durations and timeouts that ran out without a new observation.
    async fn tick(&mut self, now: DateTime<Utc>) -> Result<()> {
        let uuids: Vec<Uuid> = self.rules.keys().copied().collect();
        for uuid in uuids {
            let Some(rule) = self.rules.get(&uuid).cloned() else {
                continue;
            };
            if rule.state != NORMAL {
                continue;
            }
            let timeout = chrono::Duration::seconds(i64::from(rule.timeout_seconds.unwrap_or(0)));
            match kind(&rule) {
                Some(RuleKind::Above | RuleKind::Below) if self.since.contains_key(&uuid) => {
                    self.try_fire_threshold(uuid, now).await?;
                }
                Some(RuleKind::Offline) => {
                    let Some(since) = self.since.get(&uuid).copied() else {
                        continue;
                    };
                    if now - since >= timeout {
                        self.since.remove(&uuid);
                        let (unit, _) = self.names(&rule).await?;
                        let message = format!("⚠️ {unit} is offline since {}", time(since));
                        self.transition(&rule, FIRED, FIRING, None, None, message, now)
                            .await?;
                    }
                }
                Some(RuleKind::NoValue) => {
                    let Some(node) = rule.node_uuid else { continue };
                    let last = self
                        .latest
                        .get(&node)
                        .map(|(_, at)| *at)
                        .unwrap_or(self.started.max(rule.created_at));
                    // Counted from the later of the last value and the start, so a restart after a long
                    // stop does not fire at once for what happened while nobody watched.
                    let last = last.max(self.started);
                    if now - last >= timeout {
                        let (unit, variable) = self.names(&rule).await?;
                        let message = format!(
                            "⚠️ {unit}: no value from {variable} for {} s (since {})",
                            timeout.num_seconds(),
                            time(last)
                        );
                        self.transition(&rule, FIRED, FIRING, None, None, message, now)
                            .await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The rule's unit name and variable name, for messages.
    async fn names(&self, rule: &alert_rules::Model) -> Result<(String, String)> {
        let db = self.services.db();
        let variable = match rule.node_uuid {
            Some(node) => unit_nodes::Entity::find_by_id(node)
                .one(db)
                .await?
                .map(|n| variable_name(&n))
                .unwrap_or_default(),
            None => String::new(),
        };
        let unit = match rule.unit_uuid {
            Some(unit) => units::Entity::find_by_id(unit)
                .one(db)
                .await?
                .map(|u| u.name)
                .unwrap_or_default(),
            None => String::new(),
        };
        Ok((unit, variable))
    }

    /// Whether the rule's owner may still see what it watches (visibility and grants may have changed).
    async fn owner_may_see(&self, rule: &alert_rules::Model) -> Result<bool> {
        let db = self.services.db();
        let Some(user) = users::Entity::find_by_id(rule.user_uuid).one(db).await? else {
            return Ok(false);
        };
        let actor = Actor::User(AuthUser {
            id: user.uuid.into(),
            role: user.role,
        });
        if let Some(unit) = rule.unit_uuid {
            return Ok(
                access::find_visible::<units::Entity>(db, &actor, unit, "unit")
                    .await
                    .is_ok(),
            );
        }
        if let Some(repo) = rule.repo_unit_uuid {
            return Ok(
                access::find_visible::<repo_units::Entity>(db, &actor, repo, "repo_unit")
                    .await
                    .is_ok(),
            );
        }
        Ok(false)
    }

    /// Writes the rule's new state, the alert and its outbox rows in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &mut self,
        rule: &alert_rules::Model,
        kind: &'static str,
        state: &'static str,
        value: Option<String>,
        detail: Option<String>,
        message: String,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.write(
            rule,
            Change {
                kind,
                state,
                value,
                detail,
                message,
                at,
            },
        )
        .await
    }

    async fn write(&mut self, rule: &alert_rules::Model, change: Change) -> Result<()> {
        let now = Utc::now();
        if !self.owner_may_see(rule).await? {
            tracing::debug!(rule = %rule.uuid, "alert skipped: its owner no longer sees its subject");
            return Ok(());
        }
        let (unit_name, variable) = self.names(rule).await?;
        let muted = rule.muted_until.is_some_and(|until| until > now);
        let txn = crate::db::begin_write(self.services.db()).await?;
        let fired = change.kind == FIRED;
        let mut update = alert_rules::Entity::update_many()
            .col_expr(alert_rules::Column::State, Expr::value(change.state))
            .col_expr(alert_rules::Column::UpdatedAt, Expr::value(now));
        if fired {
            update = update.col_expr(alert_rules::Column::LastFiredAt, Expr::value(now));
        }
        if let Some(detail) = &change.detail {
            update = update.col_expr(alert_rules::Column::LastDetail, Expr::value(detail.clone()));
        }
        let updated = update
            .filter(alert_rules::Column::Uuid.eq(rule.uuid))
            .exec(&txn)
            .await?
            .rows_affected;
        if updated == 0 {
            // The rule went while we looked at it.
            txn.rollback().await?;
            self.rules.remove(&rule.uuid);
            return Ok(());
        }
        let alert = Uuid::new_v4();
        alerts::ActiveModel {
            uuid: Set(alert),
            user_uuid: Set(rule.user_uuid),
            rule_uuid: Set(Some(rule.uuid)),
            kind: Set(change.kind.to_owned()),
            rule_kind: Set(rule.kind.clone()),
            unit_uuid: Set(rule.unit_uuid),
            unit_name: Set(Some(unit_name).filter(|n| !n.is_empty())),
            variable: Set(Some(variable).filter(|n| !n.is_empty())),
            value: Set(change.value.clone()),
            message: Set(change.message.clone()),
            muted: Set(muted),
            created_at: Set(change.at.max(now)),
        }
        .insert(&txn)
        .await?;
        if !muted {
            let channels = alert_channels::Entity::find()
                .filter(alert_channels::Column::UserUuid.eq(rule.user_uuid))
                .all(&txn)
                .await?;
            for channel in channels {
                alert_deliveries::ActiveModel {
                    alert_uuid: Set(alert),
                    channel_uuid: Set(channel.uuid),
                    status: Set(PENDING.to_owned()),
                    attempts: Set(0),
                    next_attempt_at: Set(now),
                    last_error: Set(None),
                    sent_at: Set(None),
                    created_at: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
            }
        }
        txn.commit().await?;
        if let Some(stored) = self.rules.get_mut(&rule.uuid) {
            stored.state = change.state.to_owned();
            stored.updated_at = now;
            if fired {
                stored.last_fired_at = Some(now);
            }
            if change.detail.is_some() {
                stored.last_detail = change.detail;
            }
        }
        self.services.alerts().outbox_changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str, threshold: f64, hysteresis: f64) -> alert_rules::Model {
        let now = Utc::now();
        alert_rules::Model {
            uuid: Uuid::new_v4(),
            user_uuid: Uuid::new_v4(),
            kind: kind.to_owned(),
            unit_uuid: None,
            node_uuid: None,
            repo_unit_uuid: None,
            threshold: Some(threshold),
            hysteresis,
            min_duration_seconds: 0,
            cooldown_seconds: 0,
            timeout_seconds: None,
            muted_until: None,
            state: NORMAL.to_owned(),
            last_fired_at: None,
            last_detail: None,
            updated_at: now,
            created_at: now,
        }
    }

    #[test]
    fn a_value_fires_past_the_threshold_and_is_normal_only_back_by_the_hysteresis() {
        let above = rule("above", 30.0, 2.0);
        // (past the threshold, back by the hysteresis)
        assert_eq!(Evaluator::judge(&above, 30.5), Some((true, false)));
        assert_eq!(Evaluator::judge(&above, 30.0), Some((false, false)));
        assert_eq!(Evaluator::judge(&above, 28.5), Some((false, false)));
        assert_eq!(Evaluator::judge(&above, 28.0), Some((false, true)));
        let below = rule("below", -10.0, 1.0);
        assert_eq!(Evaluator::judge(&below, -10.5), Some((true, false)));
        assert_eq!(Evaluator::judge(&below, -9.5), Some((false, false)));
        assert_eq!(Evaluator::judge(&below, -9.0), Some((false, true)));
        assert_eq!(Evaluator::judge(&rule("offline", 0.0, 0.0), 1.0), None);
    }

    #[test]
    fn only_finite_numbers_are_values() {
        assert_eq!(number(" 21.5 "), Some(21.5));
        assert_eq!(number("on"), None);
        assert_eq!(number("NaN"), None);
        assert_eq!(number("inf"), None);
    }
}
