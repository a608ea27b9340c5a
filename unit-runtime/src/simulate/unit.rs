//! One virtual unit: an MQTT connection that behaves like a device on the wire.
//!
//! Everything a unit does runs in one task around its event loop, so a unit costs one task, one socket and
//! the client's buffers. Publishes are queued with `try_publish`: the event loop that drains the queue is
//! polled by the same task, so awaiting a full queue there would deadlock. Firmware downloads run in
//! their own task (bounded fleet-wide by a semaphore) and report back through a join handle.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pepeunit_protocol::device::{
    Route, UPDATE_FAILURE_KEY, UnitEnv, UnitSchema, UpdateCommand, UpdateFailure,
};
use rand::Rng;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use serde_json::json;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};

use super::api;
use super::stats::Stats;
use crate::error::Result;

/// Where the run is; units watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connect, subscribe and publish state, but no outputs yet: the unit an output is linked to may not
    /// have subscribed, and its messages would be lost.
    Connect,
    /// Publish outputs and state, answer commands.
    Run,
    /// Stop publishing outputs, keep receiving (so messages in flight are counted).
    Drain,
    /// Disconnect and end.
    Stop,
}

/// What every unit shares.
pub struct Shared {
    pub http: reqwest::Client,
    pub stats: Stats,
    pub downloads: Semaphore,
    /// Output messages per second per unit (0: none).
    pub rate: f64,
    pub qos: QoS,
    /// Overrides the units' `PU_STATE_SEND_INTERVAL`.
    pub state_interval: Option<Duration>,
}

/// A unit to simulate.
pub struct Spec {
    pub env: UnitEnv,
    pub schema: UnitSchema,
}

/// Microseconds since the Unix epoch: the payload of every output, so the receiver can compute latency
/// (both ends share this process's clock).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The QoS of `--qos`.
pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

async fn finished(
    pending: &mut Option<(String, JoinHandle<Result<u64>>)>,
) -> (String, Result<Result<u64>, JoinError>) {
    match pending {
        Some((commit, handle)) => (commit.clone(), handle.await),
        None => std::future::pending().await,
    }
}

struct Unit {
    spec: Spec,
    shared: Arc<Shared>,
    client: AsyncClient,
    commit: Option<String>,
    /// The firmware being downloaded, and for which commit.
    update: Option<(String, JoinHandle<Result<u64>>)>,
    started: Instant,
}

impl Unit {
    fn publish(&self, topic: &str, payload: Vec<u8>, qos: QoS) -> bool {
        match self.client.try_publish(topic, qos, false, payload) {
            Ok(()) => true,
            Err(_) => {
                Stats::add(&self.shared.stats.send_dropped, 1);
                false
            }
        }
    }

    fn publish_state(&self, failure: Option<UpdateFailure>) {
        let Some(topics) = self.spec.schema.output_base_topic.get("state/pepeunit") else {
            return;
        };
        let mut state = json!({
            "millis": u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "mem_free": 100_000,
            "mem_alloc": 20_000,
            "freq": 240_000_000,
            "pu_commit_version": self.commit,
        });
        if let Some(failure) = failure {
            state[UPDATE_FAILURE_KEY] = json!(failure);
        }
        let payload = state.to_string();
        for topic in topics {
            // State is what completes an update, so it goes at least once whatever `--qos` says.
            if self.publish(topic, payload.clone().into_bytes(), QoS::AtLeastOnce) {
                Stats::add(&self.shared.stats.states, 1);
            }
        }
    }

    fn publish_outputs(&self) {
        for topic in self.spec.schema.output_topic.values().flatten() {
            if self.publish(
                topic,
                now_micros().to_string().into_bytes(),
                self.shared.qos,
            ) {
                Stats::add(&self.shared.stats.sent, 1);
            }
        }
    }

    fn subscribe(&self) {
        let filters: Vec<SubscribeFilter> = self
            .spec
            .schema
            .subscriptions()
            .map(|topic| SubscribeFilter::new(topic.to_owned(), QoS::AtLeastOnce))
            .collect();
        if !filters.is_empty() && self.client.try_subscribe_many(filters).is_err() {
            tracing::warn!(unit = %self.spec.env.unit, "subscribe could not be queued");
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        match self.spec.schema.route(topic) {
            Some(Route::Input(_)) => {
                Stats::add(&self.shared.stats.received, 1);
                if let Some(sent) = std::str::from_utf8(payload)
                    .ok()
                    .and_then(|p| p.trim().parse::<u64>().ok())
                {
                    self.shared
                        .stats
                        .latency
                        .record(now_micros().saturating_sub(sent));
                }
            }
            Some(Route::Command("update/pepeunit")) => {
                Stats::add(&self.shared.stats.commands, 1);
                // An empty retained payload clears the command (the token was revoked).
                let Ok(command) = UpdateCommand::parse(payload) else {
                    return;
                };
                if self.commit.as_deref() == Some(command.commit.as_str()) {
                    // Already there (a retained command after a reconnect): say so again.
                    self.publish_state(None);
                } else if self.update.as_ref().map(|u| u.0.as_str())
                    != Some(command.commit.as_str())
                {
                    self.start_update(command);
                }
            }
            // env/schema updates, log sync and reset need no answer from a simulated device.
            Some(Route::Command(_)) => Stats::add(&self.shared.stats.commands, 1),
            None => {}
        }
    }

    fn start_update(&mut self, command: UpdateCommand) {
        if let Some((_, old)) = self.update.take() {
            old.abort();
        }
        let shared = self.shared.clone();
        let env = self.spec.env.clone();
        let expected = command.firmware_sha256.clone();
        let handle = tokio::spawn(async move {
            // Closed only at the end of the run, when nobody waits for the result any more.
            let _permit = shared
                .downloads
                .acquire()
                .await
                .map_err(|_| crate::error::Error::Invalid("the run is over".into()))?;
            api::firmware(&shared.http, &env, expected.as_deref()).await
        });
        self.update = Some((command.commit, handle));
    }

    fn finish_update(&mut self, commit: String, result: Result<Result<u64>, JoinError>) {
        self.update = None;
        let stats = &self.shared.stats;
        match result {
            Ok(Ok(bytes)) => {
                Stats::add(&stats.downloaded_bytes, bytes);
                Stats::add(&stats.updates_applied, 1);
                self.commit = Some(commit);
                self.publish_state(None);
            }
            Ok(Err(error)) => {
                Stats::add(&stats.update_failures, 1);
                tracing::warn!(unit = %self.spec.env.unit, %commit, %error, "update failed");
                self.publish_state(Some(UpdateFailure {
                    commit,
                    reason: error.to_string(),
                }));
            }
            Err(error) => {
                Stats::add(&stats.update_failures, 1);
                tracing::warn!(unit = %self.spec.env.unit, %commit, %error, "update task failed");
            }
        }
    }
}

/// Runs one unit until the phase is `Stop`; `connected` fires at the first answer to its CONNECT (or
/// failure), so the launcher can pace the connection ramp.
pub async fn run(
    spec: Spec,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    connected: oneshot::Sender<()>,
) {
    let env = &spec.env;
    let mut options = MqttOptions::new(env.unit.to_string(), env.mqtt_host.clone(), env.mqtt_port);
    options.set_credentials(env.auth_token.clone(), "");
    options.set_keep_alive(Duration::from_secs(
        env.mqtt_keepalive_seconds.clamp(5, 600),
    ));
    // A simulated unit sends little: small queues keep the per-unit memory near a real device's.
    options.set_inflight(16);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(options, 32);
    let state_every = shared
        .state_interval
        .unwrap_or(Duration::from_secs(env.state_send_interval_seconds));
    let mut unit = Unit {
        commit: env.commit_version.clone(),
        spec,
        shared,
        client,
        update: None,
        started: Instant::now(),
    };
    let shared = unit.shared.clone();
    let stats = &shared.stats;
    let mut connected = Some(connected);
    let mut ever_connected = false;
    let mut online = false;

    // Units start at random points of their period, so a fleet does not publish in lockstep.
    let jitter =
        |period: Duration| Instant::now() + period.mul_f64(rand::thread_rng().r#gen::<f64>());
    let mut state = tokio::time::interval_at(jitter(state_every), state_every);
    state.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let output_every =
        (unit.shared.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / unit.shared.rate));
    let mut output = tokio::time::interval_at(
        jitter(output_every.unwrap_or(Duration::from_secs(3600))),
        output_every.unwrap_or(Duration::from_secs(3600)),
    );
    output.set_missed_tick_behavior(MissedTickBehavior::Skip);

    loop {
        let current = *phase.borrow();
        if current == Phase::Stop {
            break;
        }
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    online = true;
                    if !ever_connected {
                        ever_connected = true;
                        Stats::add(&stats.connected, 1);
                    }
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(());
                    }
                    // Clean session: subscriptions are made again on every connection.
                    unit.subscribe();
                    unit.publish_state(None);
                }
                Ok(Event::Incoming(Packet::Publish(message))) => {
                    unit.on_message(&message.topic, &message.payload);
                }
                Ok(_) => {}
                Err(error) => {
                    if online {
                        Stats::add(&stats.disconnects, 1);
                    } else {
                        Stats::add(&stats.connect_failures, 1);
                    }
                    online = false;
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(());
                    }
                    if matches!(error, rumqttc::ConnectionError::ConnectionRefused(
                        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
                    )) {
                        tracing::warn!(unit = %unit.spec.env.unit, %error, "the broker refused the unit");
                    }
                    // Reconnect after a pause (the next poll reconnects), with jitter against stampedes.
                    let pause = Duration::from_millis(rand::thread_rng().gen_range(500..1500));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = phase.changed() => {}
                    }
                }
            },
            _ = output.tick(), if output_every.is_some() && online && current == Phase::Run => {
                unit.publish_outputs();
            }
            _ = state.tick(), if online => unit.publish_state(None),
            (commit, result) = finished(&mut unit.update) => unit.finish_update(commit, result),
            changed = phase.changed() => if changed.is_err() { break },
        }
    }
    if let Some((_, handle)) = unit.update.take() {
        handle.abort();
    }
    if online && unit.client.try_disconnect().is_ok() {
        // Let the event loop send the DISCONNECT, briefly: the broker drops the session either way.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while events.poll().await.is_ok() {}
        })
        .await;
    }
}
