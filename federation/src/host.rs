//! The narrow interface the server implements for this crate: settings, the key, peers, units and the
//! delivery of values. The crate never sees a database or a broker.

use async_trait::async_trait;
use url::Url;
use uuid::Uuid;

use crate::domain::Domain;
use crate::policy::{Mode, PeerStatus};
use crate::wire::{Sample, UnitObject};

/// A failure of the host; `Refused` and `NotFound` reach the sender as 403 and 404, `Internal` as 500
/// with its cause logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    Refused(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The instance's key pair, PEM encoded (PKCS#8 private, SPKI public).
#[derive(Clone)]
pub struct KeyPair {
    pub public_key_pem: String,
    pub private_key_pem: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair(********)")
    }
}

/// Another instance as this one knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub domain: Domain,
    pub actor: Url,
    pub inbox: Url,
    pub public_key_pem: String,
    pub status: PeerStatus,
    /// The Follow that asked for the peering (by either side), to answer or undo it.
    pub follow: Option<Url>,
    /// Whether this instance sent that Follow.
    pub requested_here: bool,
}

/// An instance that asked to peer, as its actor document describes it.
#[derive(Clone, Debug)]
pub struct PeerRequest {
    pub domain: Domain,
    pub actor: Url,
    pub inbox: Url,
    pub public_key_pem: String,
    pub follow: Url,
}

/// What became of a peering request that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRequestOutcome {
    /// Waits for an admin here.
    Pending,
    /// Both instances asked: the peering holds now, and the request is to be accepted.
    Accepted,
}

#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// The federation mode in force now.
    async fn mode(&self) -> Result<Mode, HostError>;

    /// The instance key pair, made on first use and kept from then on.
    async fn key_pair(&self) -> Result<KeyPair, HostError>;

    /// The instance known under `domain`, blocked ones included.
    async fn peer(&self, domain: &Domain) -> Result<Option<Peer>, HostError>;

    /// Records a request to peer (an admin decides later), unless this instance asked first.
    async fn peer_requested(&self, request: PeerRequest) -> Result<PeerRequestOutcome, HostError>;

    /// The other instance answered this instance's request to peer.
    async fn peer_answered(&self, domain: &Domain, accepted: bool) -> Result<(), HostError>;

    /// The other instance ended the peering (Undo or Reject of the peering Follow) or blocked this one.
    async fn peer_ended(&self, domain: &Domain) -> Result<(), HostError>;

    /// `unit` as `peer` may see it: `None` when it does not exist or is not shared with peers.
    async fn shared_unit(&self, peer: &Peer, unit: Uuid) -> Result<Option<UnitObject>, HostError>;

    /// `peer` follows `unit` from now on (its values are to be sent there).
    async fn follower_added(&self, peer: &Peer, unit: Uuid, follow: &Url) -> Result<(), HostError>;

    /// `peer` no longer follows `unit`.
    async fn follower_removed(&self, peer: &Peer, unit: Uuid) -> Result<(), HostError>;

    /// The home instance answered this instance's follow of its `unit`: `Some` with the unit when
    /// accepted, `None` when refused or ended.
    async fn unit_answered(
        &self,
        peer: &Peer,
        unit: Uuid,
        accepted: Option<UnitObject>,
    ) -> Result<(), HostError>;

    /// Values of followed outputs arrived from `peer`.
    async fn values(&self, peer: &Peer, samples: Vec<Sample>) -> Result<(), HostError>;
}
