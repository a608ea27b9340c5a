//! Alert rules during the fan-in (`PEPEUNIT_BENCH_ALERT_RULES`, for every Pepeunit target or one target's
//! `[PEPEUNIT_BENCH_ALERT_RULES=N]`). The server's bot talks to the Telegram Bot API stub of the tests
//! (shared, not copied), started here. Before the load the bench links the admin's chat with `/start
//! <code>` and creates the rules over GraphQL: one `ABOVE 50` rule on a probe unit's output, the rest
//! spread over the publishers' outputs (their payloads are not numbers: every value reaches the evaluator
//! and is judged, none fires). During the fan-in the probe publishes QoS 1 values that cross the
//! threshold and come back, one every 1.1 s (Telegram allows one message a second per chat): each gives
//! one message, and its **alert latency** is the probe's PUBACK → the `sendMessage` at the stub.

#[allow(unused_imports, unreachable_pub)]
#[path = "../../tests/common/telegram.rs"]
mod telegram;

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};

use crate::common::load::{Identity, options};
pub use telegram::{TOKEN, TelegramStub};

/// The admin's chat with the bot.
pub const CHAT: i64 = 4242;
/// The probe rule's threshold: the probe alternates values above and below it.
pub const THRESHOLD: f64 = 50.0;

/// The setting's name, in the environment or a target's `[...]`.
pub const SETTING: &str = "PEPEUNIT_BENCH_ALERT_RULES";

/// What the probe measured.
#[derive(Default)]
pub struct Latency {
    /// PUBACK → sendMessage, in µs.
    pub micros: Vec<u32>,
    /// Values acknowledged whose alert did not arrive within 30 s.
    pub missing: usize,
}

/// The server settings of a bot talking to `stub` with room for `rules` rules.
pub fn server_env(stub: &TelegramStub, rules: usize) -> Vec<(String, String)> {
    vec![
        ("PEPEUNIT_TELEGRAM_BOT_TOKEN".into(), TOKEN.into()),
        ("PEPEUNIT_TELEGRAM_API_URL".into(), stub.url.clone()),
        ("PEPEUNIT_TELEGRAM_MODE".into(), "polling".into()),
        ("PEPEUNIT_ALERT_RULES_PER_USER".into(), rules.to_string()),
    ]
}

/// Publishes crossing values as `probe` from `start` until `stop`, each after the previous one's alert
/// (and at least 1.1 s after the one before), and measures each alert's latency.
pub async fn probe(
    port: u16,
    probe: Identity,
    stub: &TelegramStub,
    start: Instant,
    stop: Instant,
) -> Latency {
    let mut out = Latency::default();
    let (client, mut events) = AsyncClient::new(options(port, &probe, 10), 16);
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let driver = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    let _ = acks.send(Instant::now());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::sleep_until(start.into()).await;
    let mut high = true;
    while Instant::now() < stop {
        let next = Instant::now() + Duration::from_millis(1100);
        let before = stub.messages(CHAT).len();
        let value = if high { "100" } else { "0" };
        high = !high;
        if client
            .publish(&probe.topic, QoS::AtLeastOnce, false, value)
            .await
            .is_err()
        {
            break;
        }
        let Ok(Some(at)) = tokio::time::timeout(Duration::from_secs(30), acked.recv()).await else {
            break;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let arrived = loop {
            if let Some(message) = stub.messages(CHAT).into_iter().nth(before) {
                break Some(message.at);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        match arrived {
            Some(arrived) => out.micros.push(
                arrived
                    .saturating_duration_since(at)
                    .as_micros()
                    .min(u128::from(u32::MAX)) as u32,
            ),
            None => out.missing += 1,
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let _ = client.disconnect().await;
    driver.abort();
    out
}
