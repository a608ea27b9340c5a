//! Persistent sessions of offline units, in memory.
//!
//! When a connection with a persistent session ends (MQTT 3 `clean_session = 0`, MQTT 5 Session Expiry
//! Interval > 0), its subscriptions stay in the router, pointing at a [`Parked`] queue instead of the
//! connection: QoS 1 messages routed there wait, after the deliveries the connection had sent but not seen
//! acknowledged. The next connection of the unit that does not ask for a clean start takes the whole
//! session back (subscriptions still allowed by its permissions, then the in-flight messages again with
//! DUP set and their packet ids, then the queued ones, in order). A session is dropped when it expires,
//! when the unit connects with a clean start, or when the unit is revoked. Sessions live in memory only:
//! they do not survive a restart of the server.
//!
//! A kept session holds at most `mqtt_session_max_queued` messages; past that the oldest is dropped and the
//! drop counted (`pepeunit_limit_hits_total{limit="mqtt_session_queue"}`), as EMQX does with its
//! message queue. The payloads are shared with every other subscriber of the same message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::acl::Acl;
use super::{Broker, Delivery, Subscriber, Target, session};

/// What an offline session holds, in delivery order.
#[derive(Default)]
pub(crate) struct Held {
    /// Sent before the connection ended and not acknowledged, with their packet ids.
    pub(crate) inflight: Vec<(u16, Delivery)>,
    /// Not sent yet.
    pub(crate) queued: VecDeque<Delivery>,
}

impl Held {
    fn len(&self) -> usize {
        self.inflight.len() + self.queued.len()
    }

    /// Drops the oldest message; false when there was none.
    fn drop_oldest(&mut self) -> bool {
        if self.inflight.is_empty() {
            self.queued.pop_front().is_some()
        } else {
            self.inflight.remove(0);
            true
        }
    }
}

/// The queue of an offline session, which routing appends to.
pub(crate) struct Parked {
    unit: Uuid,
    held: Mutex<Held>,
}

impl Parked {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A kept session in the router, keyed by unit.
pub(crate) struct Stored {
    /// The subscriber id its parked subscriptions are registered under (its last connection's).
    pub(crate) id: u64,
    pub(crate) parked: Arc<Parked>,
    pub(crate) subscriptions: Vec<(String, u8)>,
}

/// What a connection takes back from a kept session.
#[derive(Default)]
pub(crate) struct Resumed {
    pub(crate) present: bool,
    pub(crate) subscriptions: Vec<(String, u8)>,
    pub(crate) held: Held,
}

/// What a connection's writer leaves when it ends.
pub(crate) struct Leftover {
    pub(crate) held: Held,
    pub(crate) deliveries: mpsc::Receiver<Delivery>,
}

impl Broker {
    /// Appends a message for an offline session, dropping the oldest one past the cap.
    pub(super) fn park(&self, parked: &Parked, delivery: Delivery) {
        let mut held = parked.held();
        held.queued.push_back(delivery);
        self.trim(parked.unit, &mut held);
    }

    fn trim(&self, unit: Uuid, held: &mut Held) {
        let max = self.limits.session_max_queued;
        while held.len() > max && held.drop_oldest() {
            self.limits.counters.hit(
                "mqtt_session_queue",
                &format_args!(
                    "the kept session of unit {unit} holds {max} messages; the oldest was dropped"
                ),
            );
        }
    }

    /// A delivery that was waiting for room when its connection ended: kept if the session was.
    pub(super) fn park_late(&self, unit: Uuid, delivery: Delivery) {
        if delivery.qos == 0 {
            return;
        }
        let parked = self
            .router
            .sessions()
            .get(&unit)
            .map(|stored| stored.parked.clone());
        if let Some(parked) = parked {
            self.park(&parked, delivery);
        }
    }

    /// Forgets `unit`'s kept session, if any.
    pub(crate) fn discard_session(&self, unit: Uuid) {
        let stored = self.router.sessions().remove(&unit);
        if let Some(stored) = stored {
            self.unregister(stored.id, &stored.subscriptions);
            self.limits.counters.stored_sessions().dec();
        }
    }

    /// Removes subscriber `id` from `topics`.
    pub(super) fn unregister(&self, id: u64, topics: &[(String, u8)]) {
        let mut subscriptions = self.router.subscriptions_mut();
        for (topic, _) in topics {
            if let Some(subscribers) = subscriptions.get_mut(topic) {
                subscribers.remove(&id);
                if subscribers.is_empty() {
                    subscriptions.remove(topic);
                }
            }
        }
    }

    /// Takes `unit`'s kept session for connection `id`: its subscriptions that `acl` still allows go live
    /// on `deliveries`, and its held messages on those topics come back to be sent first.
    pub(crate) fn resume_session(
        &self,
        unit: Uuid,
        id: u64,
        acl: &Acl,
        deliveries: &mpsc::Sender<Delivery>,
        conn: &Arc<session::Conn>,
    ) -> Resumed {
        let Some(stored) = self.router.sessions().remove(&unit) else {
            return Resumed::default();
        };
        self.limits.counters.stored_sessions().dec();
        let mut kept = Vec::new();
        // Under the routing lock, so that every message is either held (and taken now) or routed to the
        // new connection after it: none is lost or overtakes the held ones.
        let mut subscriptions = self.router.subscriptions_mut();
        for (topic, qos) in stored.subscriptions {
            if let Some(subscribers) = subscriptions.get_mut(&topic) {
                subscribers.remove(&stored.id);
                if subscribers.is_empty() {
                    subscriptions.remove(&topic);
                }
            }
            if acl.may_subscribe(&topic) {
                subscriptions.entry(topic.clone()).or_default().insert(
                    id,
                    Subscriber {
                        qos,
                        target: Target::Live {
                            deliveries: deliveries.clone(),
                            conn: conn.clone(),
                        },
                    },
                );
                kept.push((topic, qos));
            }
        }
        let mut held = std::mem::take(&mut *stored.parked.held());
        drop(subscriptions);
        // Permissions are read afresh at every CONNECT: what the unit may no longer receive is not sent.
        held.inflight.retain(|(_, d)| acl.may_subscribe(d.topic()));
        held.queued.retain(|d| acl.may_subscribe(d.topic()));
        Resumed {
            present: true,
            subscriptions: kept,
            held,
        }
    }

    /// Turns connection `id`'s subscriptions into a parked session's; from now on routing holds their
    /// QoS 1 messages. Returns the queue and the subscriptions parked: those of `topics` still registered
    /// (a link removed meanwhile has pruned its own). The writer's leftovers are added in front by
    /// [`Broker::keep_session`].
    pub(crate) fn park_subscriptions(
        &self,
        unit: Uuid,
        id: u64,
        topics: Vec<(String, u8)>,
    ) -> (Arc<Parked>, Vec<(String, u8)>) {
        let parked = Arc::new(Parked {
            unit,
            held: Mutex::new(Held::default()),
        });
        let mut kept = Vec::with_capacity(topics.len());
        let mut subscriptions = self.router.subscriptions_mut();
        for (topic, qos) in topics {
            if let Some(subscriber) = subscriptions
                .get_mut(&topic)
                .and_then(|subscribers| subscribers.get_mut(&id))
            {
                subscriber.target = Target::Parked(parked.clone());
                kept.push((topic, qos));
            }
        }
        (parked, kept)
    }

    /// Keeps the parked session of connection `id` for `expiry`: what its writer had in flight and queued
    /// goes before what was routed to it since.
    pub(crate) fn keep_session(
        &self,
        unit: Uuid,
        id: u64,
        parked: Arc<Parked>,
        subscriptions: Vec<(String, u8)>,
        leftover: Leftover,
        expiry: Duration,
    ) {
        let Leftover {
            held: mut earlier,
            mut deliveries,
        } = leftover;
        {
            // Routing no longer reaches the closed receiver (its subscriptions are parked), so what is
            // in it is complete.
            while let Ok(delivery) = deliveries.try_recv() {
                earlier.queued.push_back(delivery);
            }
            drop(deliveries);
            earlier.queued.retain(|d| d.qos > 0);
            let mut held = parked.held();
            let later = std::mem::take(&mut held.queued);
            earlier.queued.extend(later);
            *held = earlier;
            self.trim(unit, &mut held);
        }
        let replaced = self.router.sessions().insert(
            unit,
            Stored {
                id,
                parked,
                subscriptions,
            },
        );
        match replaced {
            // A session kept by an older connection that ended late; this one is newer.
            Some(old) => self.unregister(old.id, &old.subscriptions),
            None => {
                self.limits.counters.stored_sessions().inc();
            }
        }
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(expiry).await;
            broker.expire(unit, id);
        });
    }

    /// Ends `unit`'s kept session if it is still the one connection `id` left.
    fn expire(&self, unit: Uuid, id: u64) {
        let expired = {
            let mut sessions = self.router.sessions();
            match sessions.get(&unit) {
                Some(stored) if stored.id == id => sessions.remove(&unit),
                _ => None,
            }
        };
        if let Some(stored) = expired {
            self.unregister(stored.id, &stored.subscriptions);
            self.limits.counters.stored_sessions().dec();
            tracing::debug!(%unit, "mqtt session expired");
        }
    }
}
