//! A unit's MQTT side in tests: a real client library (rumqttc) over TCP to the embedded broker.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use super::TestServer;

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Message {
        topic: String,
        payload: String,
        retain: bool,
        /// Set on a redelivery.
        dup: bool,
        /// The packet id of a QoS 1 delivery (0 at QoS 0).
        pkid: u16,
    },
    PubAck(u16),
    Closed(String),
}

/// A connected client and what it receives.
pub struct MqttUnit {
    pub client: AsyncClient,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    /// How many SUBACKs the client has received.
    subacks: tokio::sync::watch::Receiver<usize>,
}

/// Connects as `client_id` with `token`; `Err(code)` when the broker refuses the CONNECT.
pub async fn connect(
    server: &TestServer,
    client_id: &str,
    token: &str,
) -> Result<MqttUnit, ConnectReturnCode> {
    connect_with(server, client_id, token, |_| {})
        .await
        .map(|(unit, _)| unit)
}

/// As [`connect`], with `adjust` changing the client's options; also returns CONNACK's session-present flag.
pub async fn connect_with(
    server: &TestServer,
    client_id: &str,
    token: &str,
    adjust: impl FnOnce(&mut MqttOptions),
) -> Result<(MqttUnit, bool), ConnectReturnCode> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", server.mqtt.port());
    options.set_credentials(token, "");
    options.set_keep_alive(Duration::from_secs(30));
    adjust(&mut options);
    let (client, mut events) = AsyncClient::new(options, 64);
    let session_present = loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    return Err(ack.code);
                }
                break ack.session_present;
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Err(code),
            Err(error) => panic!("connect failed: {error}"),
        }
    };
    let (tx, seen) = mpsc::unbounded_channel();
    let (suback_tx, subacks) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Seen::Message {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        retain: p.retain,
                        dup: p.dup,
                        pkid: p.pkid,
                    });
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let _ = tx.send(Seen::PubAck(ack.pkid));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    suback_tx.send_modify(|n| *n += 1);
                }
                Ok(_) => {}
                Err(error) => {
                    let _ = tx.send(Seen::Closed(error.to_string()));
                    return;
                }
            }
        }
    });
    Ok((
        MqttUnit {
            client,
            seen,
            subacks,
        },
        session_present,
    ))
}

impl MqttUnit {
    pub async fn subscribe(&self, topic: &str) {
        self.client.subscribe(topic, QoS::AtMostOnce).await.unwrap();
    }

    /// Subscribes at QoS 1 and waits (generously) for the SUBACK: deliveries start from there.
    pub async fn subscribe_acked(&mut self, topic: &str) {
        let before = *self.subacks.borrow_and_update();
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(20),
            self.subacks.wait_for(|n| *n > before),
        )
        .await
        .expect("SUBACK")
        .expect("client running");
    }

    /// Acknowledges the QoS 1 delivery with packet id `pkid` (with manual acknowledgements on).
    pub async fn ack(&self, pkid: u16) {
        let mut publish = rumqttc::Publish::new("", QoS::AtLeastOnce, Vec::new());
        publish.pkid = pkid;
        self.client.ack(&publish).await.unwrap();
    }

    pub async fn publish(&self, topic: &str, payload: &str, qos: QoS) {
        self.client
            .publish(topic, qos, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
    }

    /// The next thing seen within `wait`, if any.
    pub async fn next(&mut self, wait: Duration) -> Option<Seen> {
        tokio::time::timeout(wait, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next message, skipping acknowledgements; panics on a close or after two seconds.
    pub async fn message(&mut self) -> (String, String) {
        loop {
            match self.next(Duration::from_secs(2)).await {
                Some(Seen::Message { topic, payload, .. }) => return (topic, payload),
                Some(Seen::PubAck(_)) => {}
                other => panic!("expected a message, saw {other:?}"),
            }
        }
    }

    /// Waits until the broker closes the connection; panics if a message arrives first or nothing happens.
    pub async fn closed(&mut self) {
        loop {
            match self.next(Duration::from_secs(2)).await {
                Some(Seen::Closed(_)) => return,
                Some(Seen::PubAck(_)) => {}
                other => panic!("expected the connection to close, saw {other:?}"),
            }
        }
    }

    /// Asserts nothing arrives for a while.
    pub async fn quiet(&mut self) {
        if let Some(seen) = self.next(Duration::from_millis(300)).await {
            panic!("expected nothing, saw {seen:?}");
        }
    }
}
