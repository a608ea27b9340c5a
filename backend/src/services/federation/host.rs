//! What the federation crate asks of this server ([`Host`], [`Source`]), answered from the database.
//!
//! Holds the services weakly: the services own the federation, which owns this host.

use std::collections::{HashMap, HashSet};
use std::sync::Weak;

use async_trait::async_trait;
use chrono::Utc;
use pepeunit_federation::outbox::{Offer, Source};
use pepeunit_federation::wire::{OutputObject, Sample, UnitObject, UnitType};
use pepeunit_federation::{
    Domain, Host, HostError, KeyPair, Mode, Peer, PeerRequest, PeerRequestOutcome, PeerStatus,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, Set,
};
use tokio::sync::{Mutex, OnceCell, mpsc};
use url::Url;
use uuid::Uuid;

use super::{RemoteStatus, affected_by_remote_units, peer_of};
use crate::entities::{
    federation_followers as followers, federation_keys as keys, federation_peers as peers,
    federation_remote_outputs as outputs, federation_remote_units as remote_units, unit_nodes,
    units,
};
use crate::error::Error;
use crate::services::units::events::UnitEvent;
use crate::services::units::nodes::NodeKind;
use crate::services::units::schema_json::node_topic;
use crate::services::{Inner, Services};

/// Most instances that may wait for an admin's answer at once; more requests are refused until some
/// are answered.
const MAX_PENDING_REQUESTS: u64 = 100;

/// A value of a remote output to publish on this instance's broker: (topic, payload).
pub type RemoteValue = (String, Vec<u8>);

pub struct ServerHost {
    services: std::sync::OnceLock<Weak<Inner>>,
    values: mpsc::Sender<RemoteValue>,
    keys: OnceCell<KeyPair>,
    /// Samples of one output are applied in order: one batch at a time.
    applying: Mutex<()>,
}

impl ServerHost {
    pub fn new(values: mpsc::Sender<RemoteValue>) -> Self {
        Self {
            services: std::sync::OnceLock::new(),
            values,
            keys: OnceCell::new(),
            applying: Mutex::new(()),
        }
    }

    /// Points the host at the services that own it (once, right after they are made).
    pub(in crate::services) fn attach(&self, services: Weak<Inner>) {
        let _ = self.services.set(services);
    }

    fn services(&self) -> Result<Services, HostError> {
        self.services
            .get()
            .and_then(Weak::upgrade)
            .map(|inner| Services { inner })
            .ok_or_else(|| HostError::Internal("the server is stopping".into()))
    }
}

fn internal(error: impl std::fmt::Display) -> HostError {
    HostError::Internal(error.to_string())
}

impl From<Error> for HostError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotFound(what) => HostError::NotFound(what),
            Error::Forbidden(why) | Error::Conflict(why) => HostError::Refused(why),
            other => HostError::Internal(other.to_string()),
        }
    }
}

/// A unit as peers may see it; `None` unless it and its outputs are public or federated.
pub(super) async fn shared_unit(
    services: &Services,
    unit: Uuid,
) -> Result<Option<UnitObject>, Error> {
    let Some(row) = units::Entity::find_by_id(unit).one(services.db()).await? else {
        return Ok(None);
    };
    if !row.visibility.shared_with_peers() {
        return Ok(None);
    }
    let outputs = unit_nodes::Entity::find()
        .filter(unit_nodes::Column::UnitUuid.eq(unit))
        .filter(unit_nodes::Column::Kind.eq(NodeKind::Output.as_str()))
        .all(services.db())
        .await?
        .into_iter()
        .filter(|n| n.visibility.shared_with_peers())
        .map(|n| OutputObject {
            uuid: n.uuid,
            name: n.topic_name,
            last_value: n.last_value,
            last_value_at: n.last_value_at,
        })
        .collect();
    Ok(Some(UnitObject {
        kind: UnitType::Unit,
        id: services.federation().urls().unit(unit),
        uuid: unit,
        name: row.name,
        outputs,
    }))
}

#[async_trait]
impl Host for ServerHost {
    async fn mode(&self) -> Result<Mode, HostError> {
        let services = self.services()?;
        let settings = crate::services::settings::current(services.db()).await?;
        Ok(if settings.federation_enabled {
            Mode::TrustedPeersOnly
        } else {
            Mode::Off
        })
    }

    async fn key_pair(&self) -> Result<KeyPair, HostError> {
        let services = self.services()?;
        self.keys
            .get_or_try_init(|| async {
                if let Some(row) = keys::Entity::find_by_id(keys::SINGLETON_ID)
                    .one(services.db())
                    .await
                    .map_err(internal)?
                {
                    return open(&services, row);
                }
                let made = tokio::task::spawn_blocking(pepeunit_federation::generate_key_pair)
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
                let sealed = services
                    .master_key()
                    .encrypt(made.private_key_pem.as_bytes())
                    .map_err(internal)?;
                let inserted = keys::ActiveModel {
                    id: Set(keys::SINGLETON_ID),
                    public_key_pem: Set(made.public_key_pem.clone()),
                    private_key_sealed: Set(sealed),
                    created_at: Set(Utc::now()),
                }
                .insert(services.db())
                .await;
                match inserted {
                    Ok(_) => {
                        tracing::info!("made the instance's federation key pair");
                        Ok(made)
                    }
                    // Another start made one first: use that.
                    Err(_) => {
                        let row = keys::Entity::find_by_id(keys::SINGLETON_ID)
                            .one(services.db())
                            .await
                            .map_err(internal)?
                            .ok_or_else(|| internal("the instance key is missing"))?;
                        open(&services, row)
                    }
                }
            })
            .await
            .cloned()
    }

    async fn peer(&self, domain: &Domain) -> Result<Option<Peer>, HostError> {
        let services = self.services()?;
        let row = peers::Entity::find()
            .filter(peers::Column::Domain.eq(domain.as_str()))
            .one(services.db())
            .await
            .map_err(internal)?;
        Ok(row.and_then(|r| peer_of(&r)))
    }

    async fn peer_requested(&self, request: PeerRequest) -> Result<PeerRequestOutcome, HostError> {
        let services = self.services()?;
        let db = services.db();
        let existing = peers::Entity::find()
            .filter(peers::Column::Domain.eq(request.domain.as_str()))
            .one(db)
            .await
            .map_err(internal)?;
        let now = Utc::now();
        let is_new = existing.is_none();
        let (mut row, outcome) = match existing {
            Some(row) if row.status == PeerStatus::Requested.as_str() => {
                let mut active = row.into_active_model();
                active.status = Set(PeerStatus::Accepted.as_str().into());
                (active, PeerRequestOutcome::Accepted)
            }
            Some(row) if row.status == PeerStatus::Accepted.as_str() => {
                // Asked again (it lost its state?): it is a peer already.
                (row.into_active_model(), PeerRequestOutcome::Accepted)
            }
            Some(row) => {
                let mut active = row.into_active_model();
                active.status = Set(PeerStatus::Pending.as_str().into());
                active.requested_here = Set(false);
                active.follow_id = Set(Some(request.follow.to_string()));
                (active, PeerRequestOutcome::Pending)
            }
            None => {
                let waiting = peers::Entity::find()
                    .filter(peers::Column::Status.eq(PeerStatus::Pending.as_str()))
                    .count(db)
                    .await
                    .map_err(internal)?;
                if waiting >= MAX_PENDING_REQUESTS {
                    return Err(HostError::Refused(
                        "too many requests to peer wait for an answer; try later".into(),
                    ));
                }
                let active = peers::ActiveModel {
                    uuid: Set(Uuid::new_v4()),
                    domain: Set(request.domain.to_string()),
                    status: Set(PeerStatus::Pending.as_str().into()),
                    requested_here: Set(false),
                    follow_id: Set(Some(request.follow.to_string())),
                    created_at: Set(now),
                    ..Default::default()
                };
                (active, PeerRequestOutcome::Pending)
            }
        };
        row.actor_url = Set(request.actor.to_string());
        row.inbox_url = Set(request.inbox.to_string());
        row.public_key_pem = Set(Some(request.public_key_pem));
        row.updated_at = Set(now);
        if is_new {
            row.insert(db).await.map_err(internal)?;
        } else {
            row.update(db).await.map_err(internal)?;
        }
        tracing::info!(peer = %request.domain, ?outcome, "an instance asked to peer");
        Ok(outcome)
    }

    async fn peer_answered(&self, domain: &Domain, accepted: bool) -> Result<(), HostError> {
        let services = self.services()?;
        let Some(row) = peers::Entity::find()
            .filter(peers::Column::Domain.eq(domain.as_str()))
            .one(services.db())
            .await
            .map_err(internal)?
        else {
            return Err(HostError::NotFound("peer"));
        };
        if row.status != PeerStatus::Requested.as_str()
            && row.status != PeerStatus::Accepted.as_str()
        {
            return Ok(());
        }
        let status = if accepted {
            PeerStatus::Accepted
        } else {
            PeerStatus::Rejected
        };
        let mut active = row.into_active_model();
        active.status = Set(status.as_str().into());
        active.updated_at = Set(Utc::now());
        active.update(services.db()).await.map_err(internal)?;
        tracing::info!(peer = %domain, status = status.as_str(), "peering answered");
        Ok(())
    }

    async fn peer_ended(&self, domain: &Domain) -> Result<(), HostError> {
        let services = self.services()?;
        super::forget_peer(&services, domain, None).await?;
        tracing::info!(peer = %domain, "the other instance ended the peering");
        Ok(())
    }

    async fn shared_unit(&self, peer: &Peer, unit: Uuid) -> Result<Option<UnitObject>, HostError> {
        let services = self.services()?;
        if super::unit_blocks::is_blocked(&services, unit, &peer.domain).await? {
            return Err(HostError::Refused(
                "the owner of this unit blocked your instance from it".into(),
            ));
        }
        Ok(shared_unit(&services, unit).await?)
    }

    async fn follower_added(&self, peer: &Peer, unit: Uuid, follow: &Url) -> Result<(), HostError> {
        let services = self.services()?;
        let peer_row = super::peer_row(&services, &peer.domain).await?;
        let existing = followers::Entity::find()
            .filter(followers::Column::PeerUuid.eq(peer_row.uuid))
            .filter(followers::Column::UnitUuid.eq(unit))
            .one(services.db())
            .await
            .map_err(internal)?;
        match existing {
            Some(row) => {
                let mut active = row.into_active_model();
                active.follow_id = Set(follow.to_string());
                active.update(services.db()).await.map_err(internal)?;
            }
            None => {
                followers::ActiveModel {
                    uuid: Set(Uuid::new_v4()),
                    peer_uuid: Set(peer_row.uuid),
                    unit_uuid: Set(unit),
                    follow_id: Set(follow.to_string()),
                    created_at: Set(Utc::now()),
                }
                .insert(services.db())
                .await
                .map_err(internal)?;
            }
        }
        tracing::info!(peer = %peer.domain, %unit, "a peer follows a unit");
        Ok(())
    }

    async fn follower_removed(&self, peer: &Peer, unit: Uuid) -> Result<(), HostError> {
        let services = self.services()?;
        let peer_row = super::peer_row(&services, &peer.domain).await?;
        followers::Entity::delete_many()
            .filter(followers::Column::PeerUuid.eq(peer_row.uuid))
            .filter(followers::Column::UnitUuid.eq(unit))
            .exec(services.db())
            .await
            .map_err(internal)?;
        Ok(())
    }

    async fn unit_answered(
        &self,
        peer: &Peer,
        unit: Uuid,
        accepted: Option<UnitObject>,
    ) -> Result<(), HostError> {
        let services = self.services()?;
        let peer_row = super::peer_row(&services, &peer.domain).await?;
        let Some(remote) = remote_units::Entity::find()
            .filter(remote_units::Column::PeerUuid.eq(peer_row.uuid))
            .filter(remote_units::Column::RemoteUnitUuid.eq(unit))
            .one(services.db())
            .await
            .map_err(internal)?
        else {
            return Err(HostError::NotFound("remote unit"));
        };
        let affected = affected_by_remote_units(services.db(), [remote.uuid]).await?;
        let now = Utc::now();
        let txn = crate::db::begin_write(services.db())
            .await
            .map_err(internal)?;
        let mut active = remote.clone().into_active_model();
        active.updated_at = Set(now);
        match accepted {
            Some(object) => {
                active.status = Set(RemoteStatus::Accepted.as_str().into());
                active.name = Set(Some(object.name.clone()));
                let known: HashMap<Uuid, outputs::Model> = outputs::Entity::find()
                    .filter(outputs::Column::RemoteUnitUuid.eq(remote.uuid))
                    .all(&txn)
                    .await
                    .map_err(internal)?
                    .into_iter()
                    .map(|o| (o.remote_node_uuid, o))
                    .collect();
                let present: HashSet<Uuid> = object.outputs.iter().map(|o| o.uuid).collect();
                for gone in known
                    .values()
                    .filter(|o| !present.contains(&o.remote_node_uuid))
                {
                    outputs::Entity::delete_by_id(gone.uuid)
                        .exec(&txn)
                        .await
                        .map_err(internal)?;
                }
                for output in object.outputs {
                    match known.get(&output.uuid) {
                        Some(row) => {
                            let mut row = row.clone().into_active_model();
                            row.topic_name = Set(output.name);
                            row.updated_at = Set(now);
                            row.update(&txn).await.map_err(internal)?;
                        }
                        None => {
                            outputs::ActiveModel {
                                uuid: Set(Uuid::new_v4()),
                                remote_unit_uuid: Set(remote.uuid),
                                remote_node_uuid: Set(output.uuid),
                                topic_name: Set(output.name),
                                last_value: Set(output.last_value),
                                last_value_at: Set(output.last_value_at),
                                last_sequence: Set(0),
                                created_at: Set(now),
                                updated_at: Set(now),
                            }
                            .insert(&txn)
                            .await
                            .map_err(internal)?;
                        }
                    }
                }
                tracing::info!(peer = %peer.domain, %unit, "a peer accepted a unit follow");
            }
            None => {
                active.status = Set(RemoteStatus::Gone.as_str().into());
                crate::entities::federation_remote_links::Entity::delete_many()
                    .filter(
                        crate::entities::federation_remote_links::Column::RemoteUnitUuid
                            .eq(remote.uuid),
                    )
                    .exec(&txn)
                    .await
                    .map_err(internal)?;
                outputs::Entity::delete_many()
                    .filter(outputs::Column::RemoteUnitUuid.eq(remote.uuid))
                    .exec(&txn)
                    .await
                    .map_err(internal)?;
                tracing::info!(peer = %peer.domain, %unit, "a remote unit is no longer available");
            }
        }
        active.update(&txn).await.map_err(internal)?;
        txn.commit().await.map_err(internal)?;
        let mut affected = affected;
        affected.extend(affected_by_remote_units(services.db(), [remote.uuid]).await?);
        for unit in affected {
            services.unit_events().send(UnitEvent::SchemaChanged(unit));
        }
        Ok(())
    }

    async fn values(&self, peer: &Peer, samples: Vec<Sample>) -> Result<(), HostError> {
        let services = self.services()?;
        let _turn = self.applying.lock().await;
        let peer_row = super::peer_row(&services, &peer.domain).await?;
        let remotes: HashMap<Uuid, Uuid> = remote_units::Entity::find()
            .filter(remote_units::Column::PeerUuid.eq(peer_row.uuid))
            .filter(remote_units::Column::Status.eq(RemoteStatus::Accepted.as_str()))
            .all(services.db())
            .await
            .map_err(internal)?
            .into_iter()
            .map(|r| (r.remote_unit_uuid, r.uuid))
            .collect();
        let mirrors: HashMap<(Uuid, Uuid), outputs::Model> = outputs::Entity::find()
            .filter(outputs::Column::RemoteUnitUuid.is_in(remotes.values().copied()))
            .all(services.db())
            .await
            .map_err(internal)?
            .into_iter()
            .map(|o| ((o.remote_unit_uuid, o.remote_node_uuid), o))
            .collect();
        let mut by_mirror: HashMap<Uuid, (outputs::Model, Vec<Sample>)> = HashMap::new();
        for sample in samples {
            let Some(remote) = remotes.get(&sample.unit) else {
                continue;
            };
            let Some(mirror) = mirrors.get(&(*remote, sample.output)) else {
                continue;
            };
            by_mirror
                .entry(mirror.uuid)
                .or_insert_with(|| (mirror.clone(), Vec::new()))
                .1
                .push(sample);
        }
        let domain = services.units().endpoint.domain.clone();
        // One transaction for the batch (one commit, not one per output: on SQLite each commit is a
        // sync), and the values go to the broker once it is committed.
        let txn = crate::db::begin_write(services.db())
            .await
            .map_err(internal)?;
        let mut applied = Vec::new();
        for (mirror, mut samples) in by_mirror.into_values() {
            samples.sort_by_key(|s| s.sequence);
            let mut last = u64::try_from(mirror.last_sequence).unwrap_or(0);
            let fresh: Vec<Sample> = samples
                .into_iter()
                .filter(|s| {
                    let new = s.sequence > last;
                    if new {
                        last = s.sequence;
                    }
                    new
                })
                .collect();
            let Some(newest) = fresh.last() else {
                continue;
            };
            let mut active = mirror.clone().into_active_model();
            active.last_value = Set(Some(newest.value.clone()));
            active.last_value_at = Set(Some(newest.time));
            active.last_sequence = Set(i64::try_from(newest.sequence).unwrap_or(i64::MAX));
            active.updated_at = Set(Utc::now());
            active.update(&txn).await.map_err(internal)?;
            applied.push((node_topic(&domain, mirror.uuid, &mirror.topic_name), fresh));
        }
        txn.commit().await.map_err(internal)?;
        for (topic, fresh) in applied {
            for sample in fresh {
                if self
                    .values
                    .send((topic.clone(), sample.value.into_bytes()))
                    .await
                    .is_err()
                {
                    return Err(HostError::Internal("the broker is stopping".into()));
                }
            }
        }
        Ok(())
    }
}

fn open(services: &Services, row: keys::Model) -> Result<KeyPair, HostError> {
    let private = services
        .master_key()
        .decrypt(&row.private_key_sealed)
        .map_err(internal)?;
    Ok(KeyPair {
        public_key_pem: row.public_key_pem,
        private_key_pem: String::from_utf8(private).map_err(internal)?,
    })
}

#[async_trait]
impl Source for ServerHost {
    async fn followers(&self) -> Result<Vec<(Uuid, Domain)>, HostError> {
        let services = self.services()?;
        let accepted: HashMap<Uuid, Domain> = peers::Entity::find()
            .filter(peers::Column::Status.eq(PeerStatus::Accepted.as_str()))
            .all(services.db())
            .await
            .map_err(internal)?
            .into_iter()
            .filter_map(|p| Some((p.uuid, Domain::parse(&p.domain).ok()?)))
            .collect();
        let rows = followers::Entity::find()
            .filter(followers::Column::PeerUuid.is_in(accepted.keys().copied()))
            .all(services.db())
            .await
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in rows {
            let Some(unit) = shared_unit(&services, row.unit_uuid).await? else {
                continue;
            };
            let Some(peer) = accepted.get(&row.peer_uuid) else {
                continue;
            };
            out.extend(unit.outputs.iter().map(|o| (o.uuid, peer.clone())));
        }
        Ok(out)
    }

    async fn latest(&self, outputs: Vec<Uuid>) -> Result<Vec<Offer>, HostError> {
        let services = self.services()?;
        let nodes = unit_nodes::Entity::find()
            .filter(unit_nodes::Column::Uuid.is_in(outputs))
            .all(services.db())
            .await
            .map_err(internal)?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                Some(Offer {
                    unit: n.unit_uuid,
                    output: n.uuid,
                    value: n.last_value?,
                    time: n.last_value_at?,
                })
            })
            .collect())
    }
}
