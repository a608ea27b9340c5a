//! The unit's MQTT connection: client id = unit uuid, username = its token, subscriptions from its
//! schema, reconnecting forever with exponential backoff and jitter so a fleet that lost its broker does
//! not come back all in the same second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pepeunit_protocol::device::UnitEnv;
use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

#[derive(Debug)]
pub enum LinkEvent {
    Connected,
    Disconnected(String),
    Message { topic: String, payload: Vec<u8> },
}

pub struct Link {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// `base` scaled by a random factor in [0.5, 1.5).
fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

impl Link {
    /// Connects in the background; events arrive on `events`.
    pub fn start(env: &UnitEnv, topics: Vec<String>, events: mpsc::Sender<LinkEvent>) -> Self {
        let mut options = MqttOptions::new(env.unit.to_string(), &env.mqtt_host, env.mqtt_port);
        options
            .set_credentials(env.auth_token.clone(), "")
            .set_keep_alive(Duration::from_secs(
                env.mqtt_keepalive_seconds.clamp(5, 3600),
            ))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let connected = Arc::new(AtomicBool::new(false));
        let task = {
            let client = client.clone();
            let connected = connected.clone();
            tokio::spawn(async move {
                let mut backoff = BACKOFF_START;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            backoff = BACKOFF_START;
                            let filters = topics
                                .iter()
                                .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
                            // try_: this task is the one that drains the request queue.
                            if !topics.is_empty()
                                && let Err(error) = client.try_subscribe_many(filters)
                            {
                                tracing::warn!(%error, "subscribing failed");
                            }
                            connected.store(true, Ordering::SeqCst);
                            if events.send(LinkEvent::Connected).await.is_err() {
                                return;
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let message = LinkEvent::Message {
                                topic: publish.topic,
                                payload: publish.payload.to_vec(),
                            };
                            if events.send(message).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            if connected.swap(false, Ordering::SeqCst)
                                && events
                                    .send(LinkEvent::Disconnected(error.to_string()))
                                    .await
                                    .is_err()
                            {
                                return;
                            }
                            tracing::debug!(%error, "MQTT connection failed; retrying");
                            tokio::time::sleep(jitter(backoff)).await;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
            })
        };
        Self {
            client,
            connected,
            task,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Hands a message to the connection without waiting; fails when its queue is full (the broker is
    /// not keeping up or the connection is dying), so the caller can keep the message elsewhere.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<()> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| Error::Mqtt(e.to_string()))
    }

    /// Disconnects and stops reconnecting.
    pub async fn stop(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
        // Give the event loop a moment to send DISCONNECT before it is stopped.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
    }
}
