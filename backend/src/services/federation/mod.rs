//! Federation as the rest of the server sees it: peering (admins), following remote units and linking
//! their outputs into local inputs (users), and what happens when a shared unit goes away.
//!
//! The protocol (wire types, signatures, trust policy, batching) is the `pepeunit-federation` crate; this
//! module implements its [`pepeunit_federation::Host`] ([`host::ServerHost`]) and calls it to send.
//!
//! A remote output, once its unit's follow is accepted, is mirrored here (`federation_remote_outputs`):
//! its values arrive from the home instance and are published on the mirror's topic
//! `<domain>/<mirror uuid>`, which the linked inputs' schema.json lists, so the input units subscribe to
//! it as to a local output.

pub mod host;
pub mod unit_blocks;

use std::collections::HashSet;

use chrono::Utc;
use pepeunit_federation::wire::{Block, Follow, Undo};
use pepeunit_federation::{Domain, Peer, PeerStatus};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use url::Url;
use uuid::Uuid;

use crate::domain::InvalidValue;
use crate::entities::{
    federation_followers as followers, federation_peers as peers,
    federation_remote_links as remote_links, federation_remote_outputs as remote_outputs,
    federation_remote_units as remote_units, unit_nodes,
};
use crate::error::{Error, Result};
use crate::services::units::events::UnitEvent;
use crate::services::units::links::{may_write_input, visible_node};
use crate::services::{Actor, Services};

use pepeunit_federation::wire::kinds::{AcceptType, BlockType, FollowType, UndoType};

/// Where a followed remote unit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteStatus {
    /// Asked; the home instance has not answered.
    Pending,
    Accepted,
    /// Refused, deleted, hidden or no longer shared: its links were removed.
    Gone,
}

impl RemoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Gone => "gone",
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Validation(InvalidValue {
        field,
        message: message.into(),
    })
}

/// A stored peer row as the federation crate sees it.
pub(crate) fn peer_of(row: &peers::Model) -> Option<Peer> {
    Some(Peer {
        domain: Domain::parse(&row.domain).ok()?,
        actor: row.actor_url.parse().ok()?,
        inbox: row.inbox_url.parse().ok()?,
        public_key_pem: row.public_key_pem.clone().unwrap_or_default(),
        status: PeerStatus::parse(&row.status)?,
        follow: row.follow_id.as_deref().and_then(|f| f.parse().ok()),
        requested_here: row.requested_here,
    })
}

pub(crate) async fn peer_row(services: &Services, domain: &Domain) -> Result<peers::Model> {
    peers::Entity::find()
        .filter(peers::Column::Domain.eq(domain.as_str()))
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("peer"))
}

/// The local units with an input linked to an output of any of `remote` (remote unit rows).
pub(crate) async fn affected_by_remote_units(
    db: &impl ConnectionTrait,
    remote: impl IntoIterator<Item = Uuid>,
) -> Result<Vec<Uuid>> {
    let inputs: Vec<Uuid> = remote_links::Entity::find()
        .filter(remote_links::Column::RemoteUnitUuid.is_in(remote))
        .all(db)
        .await?
        .into_iter()
        .map(|l| l.input_node_uuid)
        .collect();
    let mut units: Vec<Uuid> = unit_nodes::Entity::find()
        .filter(unit_nodes::Column::Uuid.is_in(inputs))
        .all(db)
        .await?
        .into_iter()
        .map(|n| n.unit_uuid)
        .collect();
    units.sort();
    units.dedup();
    Ok(units)
}

/// Removes a peer and everything that hangs on it (followers of units here, followed units there with
/// their mirrors and links); or, with `block`, keeps only a `blocked` row. Units that lost a link get
/// a new schema.json.
pub(crate) async fn forget_peer(
    services: &Services,
    domain: &Domain,
    block: Option<(Url, Url)>,
) -> Result<()> {
    let db = services.db();
    let existing = peers::Entity::find()
        .filter(peers::Column::Domain.eq(domain.as_str()))
        .one(db)
        .await?;
    let mut affected = Vec::new();
    let txn = crate::db::begin_write(db).await?;
    if let Some(row) = &existing {
        let remote: Vec<Uuid> = remote_units::Entity::find()
            .filter(remote_units::Column::PeerUuid.eq(row.uuid))
            .all(&txn)
            .await?
            .into_iter()
            .map(|r| r.uuid)
            .collect();
        affected = affected_by_remote_units(&txn, remote).await?;
        peers::Entity::delete_by_id(row.uuid).exec(&txn).await?;
    }
    if let Some((actor, inbox)) = block {
        let now = Utc::now();
        peers::ActiveModel {
            uuid: Set(Uuid::new_v4()),
            domain: Set(domain.to_string()),
            actor_url: Set(actor.to_string()),
            inbox_url: Set(inbox.to_string()),
            status: Set(PeerStatus::Blocked.as_str().into()),
            public_key_pem: Set(None),
            follow_id: Set(None),
            requested_here: Set(false),
            created_at: Set(existing.as_ref().map_or(now, |r| r.created_at)),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await?;
    }
    txn.commit().await?;
    for unit in affected {
        services.unit_events().send(UnitEvent::SchemaChanged(unit));
    }
    services.federation().followers_changed();
    Ok(())
}

/// The peers this instance knows, blocked ones included (admins only).
pub async fn peers(services: &Services, actor: &Actor) -> Result<Vec<peers::Model>> {
    actor.require_admin()?;
    Ok(peers::Entity::find()
        .order_by_asc(peers::Column::Domain)
        .all(services.db())
        .await?)
}

async fn require_on(services: &Services) -> Result<()> {
    if crate::services::settings::current(services.db())
        .await?
        .federation_enabled
    {
        Ok(())
    } else {
        Err(Error::Conflict(
            "federation is off; an admin switches it on in the instance settings".into(),
        ))
    }
}

/// The actor URL of the instance an admin named by domain or URL: https unless a URL says http.
fn actor_url_of(address: &str) -> Result<(Domain, Url)> {
    let domain = Domain::parse(address).map_err(|e| invalid("address", e.to_string()))?;
    let scheme = if address.trim().starts_with("http://") {
        "http"
    } else {
        "https"
    };
    let url = Url::parse(&format!("{scheme}://{domain}/federation/actor"))
        .map_err(|e| invalid("address", e.to_string()))?;
    Ok((domain, url))
}

fn unreachable(error: pepeunit_federation::Error) -> Error {
    match error {
        pepeunit_federation::Error::Refused(why) => Error::Forbidden(why),
        pepeunit_federation::Error::Delivery(url, 401 | 403) => {
            Error::Forbidden(format!("{url} refused this instance"))
        }
        other => Error::Unavailable(format!("the other instance could not be reached: {other}")),
    }
}

fn follow(id: Url, actor: Url, object: Url) -> Follow {
    Follow {
        id,
        kind: FollowType::Follow,
        actor,
        object,
    }
}

/// Asks the instance at `address` (a domain or URL) to peer: a Follow of its instance actor.
pub async fn request_peering(
    services: &Services,
    actor: &Actor,
    address: &str,
) -> Result<peers::Model> {
    actor.require_admin()?;
    require_on(services).await?;
    let federation = services.federation();
    let (domain, actor_url) = actor_url_of(address)?;
    if &domain == federation.domain() {
        return Err(invalid("address", "that is this instance"));
    }
    let existing = peers::Entity::find()
        .filter(peers::Column::Domain.eq(domain.as_str()))
        .one(services.db())
        .await?;
    match existing.as_ref().and_then(peer_of).map(|p| p.status) {
        Some(PeerStatus::Blocked) => {
            return Err(Error::Conflict(format!(
                "{domain} is blocked; unblock it first"
            )));
        }
        Some(PeerStatus::Accepted) => return existing.ok_or(Error::NotFound("peer")),
        Some(PeerStatus::Pending) => return accept_peering(services, actor, domain.as_str()).await,
        _ => {}
    }
    let remote = federation
        .fetch_actor(&actor_url)
        .await
        .map_err(unreachable)?;
    let follow_id = federation.urls().activity();
    let now = Utc::now();
    let is_new = existing.is_none();
    let mut row = match existing {
        Some(row) => row.into_active_model(),
        None => peers::ActiveModel {
            uuid: Set(Uuid::new_v4()),
            domain: Set(domain.to_string()),
            created_at: Set(now),
            ..Default::default()
        },
    };
    row.actor_url = Set(remote.id.to_string());
    row.inbox_url = Set(remote.inbox.to_string());
    row.public_key_pem = Set(Some(remote.public_key_pem.clone()));
    row.status = Set(PeerStatus::Requested.as_str().into());
    row.follow_id = Set(Some(follow_id.to_string()));
    row.requested_here = Set(true);
    row.updated_at = Set(now);
    let row = if is_new {
        row.insert(services.db()).await?
    } else {
        row.update(services.db()).await?
    };
    let activity = follow(
        follow_id,
        federation.urls().actor.clone(),
        remote.id.clone(),
    );
    if let Err(error) = federation.send(&remote.inbox, &activity).await {
        peers::Entity::delete_by_id(row.uuid)
            .exec(services.db())
            .await?;
        return Err(unreachable(error));
    }
    tracing::info!(peer = %domain, "asked to peer");
    peer_row(services, &domain).await
}

fn parse_domain(domain: &str) -> Result<Domain> {
    Domain::parse(domain).map_err(|e| invalid("domain", e.to_string()))
}

/// Accepts another instance's request to peer.
pub async fn accept_peering(
    services: &Services,
    actor: &Actor,
    domain: &str,
) -> Result<peers::Model> {
    actor.require_admin()?;
    require_on(services).await?;
    let domain = parse_domain(domain)?;
    let row = peer_row(services, &domain).await?;
    let peer = peer_of(&row).ok_or_else(|| Error::internal("a stored peer is unreadable"))?;
    if peer.status != PeerStatus::Pending {
        return Err(Error::Conflict(format!("{domain} has not asked to peer")));
    }
    let federation = services.federation();
    let their_follow = peer
        .follow
        .clone()
        .ok_or_else(|| Error::internal("a pending peer without its Follow"))?;
    let accept = pepeunit_federation::wire::Accept {
        id: federation.urls().activity(),
        kind: AcceptType::Accept,
        actor: federation.urls().actor.clone(),
        object: follow(
            their_follow,
            peer.actor.clone(),
            federation.urls().actor.clone(),
        ),
        result: None,
    };
    let mut active = row.into_active_model();
    active.status = Set(PeerStatus::Accepted.as_str().into());
    active.updated_at = Set(Utc::now());
    let row = active.update(services.db()).await?;
    if let Err(error) = federation.send(&peer.inbox, &accept).await {
        tracing::warn!(peer = %domain, %error, "sending the Accept failed; the peer may ask again");
    }
    tracing::info!(peer = %domain, "peering accepted");
    Ok(row)
}

/// Refuses another instance's request to peer; it may ask again later.
pub async fn reject_peering(services: &Services, actor: &Actor, domain: &str) -> Result<()> {
    actor.require_admin()?;
    let domain = parse_domain(domain)?;
    let row = peer_row(services, &domain).await?;
    let peer = peer_of(&row).ok_or_else(|| Error::internal("a stored peer is unreadable"))?;
    if peer.status != PeerStatus::Pending {
        return Err(Error::Conflict(format!("{domain} has not asked to peer")));
    }
    peers::Entity::delete_by_id(row.uuid)
        .exec(services.db())
        .await?;
    if let Some(their_follow) = peer.follow.clone() {
        send_end(services, &peer, their_follow, false).await;
    }
    Ok(())
}

/// Tells `peer` that the peering asked by `follow` is over: Undo when this instance asked, else Reject.
async fn send_end(services: &Services, peer: &Peer, follow_id: Url, requested_here: bool) {
    let federation = services.federation();
    let me = federation.urls().actor.clone();
    let result = if requested_here {
        let undo = Undo {
            id: federation.urls().activity(),
            kind: UndoType::Undo,
            actor: me.clone(),
            object: follow(follow_id, me, peer.actor.clone()),
        };
        federation.send(&peer.inbox, &undo).await
    } else {
        let their = follow(follow_id, peer.actor.clone(), me);
        let reject = pepeunit_federation::inbox::reject(federation, their);
        federation.send(&peer.inbox, &reject).await
    };
    if let Err(error) = result {
        tracing::warn!(peer = %peer.domain, %error, "telling a peer that the peering ended failed");
    }
}

/// Ends a peering (or withdraws a request): both sides forget each other's units.
pub async fn end_peering(services: &Services, actor: &Actor, domain: &str) -> Result<()> {
    actor.require_admin()?;
    let domain = parse_domain(domain)?;
    let row = peer_row(services, &domain).await?;
    let peer = peer_of(&row).ok_or_else(|| Error::internal("a stored peer is unreadable"))?;
    if peer.status == PeerStatus::Blocked {
        return Err(Error::Conflict(format!(
            "{domain} is blocked; unblock it instead"
        )));
    }
    forget_peer(services, &domain, None).await?;
    if let Some(follow_id) = peer.follow.clone() {
        send_end(services, &peer, follow_id, peer.requested_here).await;
    }
    tracing::info!(peer = %domain, "peering ended");
    Ok(())
}

/// Blocks an instance in any spelling of its name: whatever it had here goes, and nothing from it is
/// accepted until it is unblocked.
pub async fn block_instance(
    services: &Services,
    actor: &Actor,
    address: &str,
) -> Result<peers::Model> {
    actor.require_admin()?;
    let (domain, guessed_actor) = actor_url_of(address)?;
    if &domain == services.federation().domain() {
        return Err(invalid("address", "that is this instance"));
    }
    let existing = peers::Entity::find()
        .filter(peers::Column::Domain.eq(domain.as_str()))
        .one(services.db())
        .await?;
    let known = existing.as_ref().and_then(peer_of);
    let (actor_url, inbox) = match &known {
        Some(peer) => (peer.actor.clone(), peer.inbox.clone()),
        None => {
            let inbox = guessed_actor
                .join("inbox")
                .map_err(|e| invalid("address", e.to_string()))?;
            (guessed_actor, inbox)
        }
    };
    // Told first: once the row says blocked, nothing more is sent there.
    if let Some(peer) = known.filter(|p| p.status == PeerStatus::Accepted) {
        let federation = services.federation();
        let block = Block {
            id: federation.urls().activity(),
            kind: BlockType::Block,
            actor: federation.urls().actor.clone(),
            object: peer.actor.clone(),
        };
        if let Err(error) = federation.send(&peer.inbox, &block).await {
            tracing::warn!(peer = %domain, %error, "telling a blocked peer failed");
        }
    }
    forget_peer(services, &domain, Some((actor_url, inbox))).await?;
    tracing::info!(peer = %domain, "instance blocked");
    peer_row(services, &domain).await
}

/// Lifts a block; the instance may ask to peer again.
pub async fn unblock_instance(services: &Services, actor: &Actor, domain: &str) -> Result<()> {
    actor.require_admin()?;
    let domain = parse_domain(domain)?;
    let row = peer_row(services, &domain).await?;
    if row.status != PeerStatus::Blocked.as_str() {
        return Err(Error::Conflict(format!("{domain} is not blocked")));
    }
    peers::Entity::delete_by_id(row.uuid)
        .exec(services.db())
        .await?;
    Ok(())
}

/// A remote unit named as `uuid@domain` or by its URL (`https://domain/federation/units/<uuid>`).
fn parse_remote_unit(address: &str) -> Result<(Domain, Uuid)> {
    let address = address.trim();
    if let Some((uuid, domain)) = address.split_once('@') {
        let uuid = uuid
            .parse()
            .map_err(|_| invalid("unit", "expected <unit uuid>@<domain>"))?;
        let domain = Domain::parse(domain).map_err(|e| invalid("unit", e.to_string()))?;
        return Ok((domain, uuid));
    }
    let url = Url::parse(address)
        .map_err(|_| invalid("unit", "expected <unit uuid>@<domain> or the unit's URL"))?;
    let domain = Domain::of_url(&url).ok_or_else(|| invalid("unit", "the URL has no host"))?;
    let uuid = url
        .path()
        .strip_prefix("/federation/units/")
        .and_then(|u| u.trim_end_matches('/').parse().ok())
        .ok_or_else(|| invalid("unit", "not a unit URL (…/federation/units/<uuid>)"))?;
    Ok((domain, uuid))
}

/// The accepted peer a remote unit lives on.
async fn accepted_peer(services: &Services, domain: &Domain) -> Result<(peers::Model, Peer)> {
    let row = peers::Entity::find()
        .filter(peers::Column::Domain.eq(domain.as_str()))
        .one(services.db())
        .await?
        .ok_or_else(|| invalid("unit", format!("{domain} is not a peer of this instance")))?;
    let peer = peer_of(&row).ok_or_else(|| Error::internal("a stored peer is unreadable"))?;
    if peer.status != PeerStatus::Accepted {
        return Err(invalid(
            "unit",
            format!("{domain} is not a peer of this instance"),
        ));
    }
    Ok((row, peer))
}

/// A remote unit as its home instance shows it now (name, outputs with their last values), read with a
/// signed GET without following it: what a user sees before linking one of its outputs.
pub async fn preview_remote_unit(
    services: &Services,
    actor: &Actor,
    address: &str,
) -> Result<(Domain, pepeunit_federation::wire::UnitObject)> {
    actor.require_user()?;
    require_on(services).await?;
    let (domain, unit) = parse_remote_unit(address)?;
    let (_, peer) = accepted_peer(services, &domain).await?;
    let mut url = peer.actor.clone();
    url.set_path(&format!("/federation/units/{unit}"));
    let object = services
        .federation()
        .fetch_unit(&url)
        .await
        .map_err(|error| match error {
            pepeunit_federation::Error::Delivery(_, 404) => {
                invalid("unit", "no such unit is shared with this instance")
            }
            other => unreachable(other),
        })?;
    Ok((domain, object))
}

/// Follows a remote unit (once per instance): its home instance answers with Accept (and its outputs)
/// or Reject.
async fn follow_remote_unit(
    services: &Services,
    creator: Uuid,
    domain: &Domain,
    unit: Uuid,
) -> Result<remote_units::Model> {
    let (peer_row, peer) = accepted_peer(services, domain).await?;
    let existing = remote_units::Entity::find()
        .filter(remote_units::Column::PeerUuid.eq(peer_row.uuid))
        .filter(remote_units::Column::RemoteUnitUuid.eq(unit))
        .one(services.db())
        .await?;
    if let Some(row) = &existing
        && row.status != RemoteStatus::Gone.as_str()
    {
        return Ok(row.clone());
    }
    let federation = services.federation();
    let object = {
        let mut url = peer.actor.clone();
        url.set_path(&format!("/federation/units/{unit}"));
        url
    };
    let follow_id = federation.urls().activity();
    let now = Utc::now();
    let is_new = existing.is_none();
    let mut row = match existing {
        Some(row) => row.into_active_model(),
        None => remote_units::ActiveModel {
            uuid: Set(Uuid::new_v4()),
            peer_uuid: Set(peer_row.uuid),
            remote_unit_uuid: Set(unit),
            name: Set(None),
            creator_uuid: Set(creator),
            created_at: Set(now),
            ..Default::default()
        },
    };
    row.object_url = Set(object.to_string());
    row.status = Set(RemoteStatus::Pending.as_str().into());
    row.follow_id = Set(follow_id.to_string());
    row.updated_at = Set(now);
    let row = if is_new {
        row.insert(services.db()).await?
    } else {
        row.update(services.db()).await?
    };
    let uuid = row.uuid;
    let activity = follow(follow_id, federation.urls().actor.clone(), object);
    if let Err(error) = federation.send(&peer.inbox, &activity).await {
        remote_units::Entity::delete_by_id(uuid)
            .exec(services.db())
            .await?;
        return Err(match error {
            pepeunit_federation::Error::Delivery(_, 404) => {
                invalid("unit", "no such unit is shared with this instance")
            }
            other => unreachable(other),
        });
    }
    remote_units::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("remote unit"))
}

/// Links the output `output` (its name) of the remote unit at `address` to the local input `input`.
/// The link works once the home instance accepts the follow (at once, if it already did).
pub async fn link_remote_output(
    services: &Services,
    actor: &Actor,
    address: &str,
    output: &str,
    input: Uuid,
) -> Result<remote_links::Model> {
    let user = actor.require_user()?;
    require_on(services).await?;
    let (input_node, input_unit) = visible_node(services, actor, input).await?;
    may_write_input(actor, &input_node, &input_unit)?;
    let (domain, unit) = parse_remote_unit(address)?;
    let remote = follow_remote_unit(services, user.id.as_uuid(), &domain, unit).await?;
    if remote.status == RemoteStatus::Accepted.as_str() {
        let known = remote_outputs::Entity::find()
            .filter(remote_outputs::Column::RemoteUnitUuid.eq(remote.uuid))
            .filter(remote_outputs::Column::TopicName.eq(output))
            .one(services.db())
            .await?;
        if known.is_none() {
            return Err(invalid("output", "the remote unit has no such output"));
        }
    }
    let link = remote_links::ActiveModel {
        uuid: Set(Uuid::new_v4()),
        remote_unit_uuid: Set(remote.uuid),
        output_name: Set(output.to_owned()),
        input_node_uuid: Set(input),
        creator_uuid: Set(user.id.as_uuid()),
        created_at: Set(Utc::now()),
    }
    .insert(services.db())
    .await
    .map_err(|e| Error::on_unique(e, "these nodes are already linked"))?;
    services
        .unit_events()
        .send(UnitEvent::SchemaChanged(input_unit.uuid));
    Ok(link)
}

/// Removes a link from a remote output: its creator, the input unit's creator, or an admin.
pub async fn unlink_remote_output(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let user = actor.require_user()?;
    let link = remote_links::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("link"))?;
    let (_, input_unit) = visible_node(services, actor, link.input_node_uuid)
        .await
        .map_err(|_| Error::NotFound("link"))?;
    if link.creator_uuid != user.id.as_uuid() {
        crate::services::access::ensure_can_edit(actor, input_unit.creator_uuid)?;
    }
    remote_links::Entity::delete_by_id(uuid)
        .exec(services.db())
        .await?;
    services
        .unit_events()
        .send(UnitEvent::SchemaChanged(input_unit.uuid));
    Ok(())
}

/// Stops following a remote unit: its links go, and its home instance is told (Undo).
pub async fn unfollow_remote_unit(services: &Services, actor: &Actor, uuid: Uuid) -> Result<()> {
    let user = actor.require_user()?;
    let remote = remote_units::Entity::find_by_id(uuid)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("remote unit"))?;
    if remote.creator_uuid != user.id.as_uuid() {
        actor.require_admin()?;
    }
    let affected = affected_by_remote_units(services.db(), [uuid]).await?;
    remote_units::Entity::delete_by_id(uuid)
        .exec(services.db())
        .await?;
    for unit in affected {
        services.unit_events().send(UnitEvent::SchemaChanged(unit));
    }
    let peer = peers::Entity::find_by_id(remote.peer_uuid)
        .one(services.db())
        .await?
        .as_ref()
        .and_then(peer_of);
    if let (Some(peer), Ok(follow_id), Ok(object)) = (
        peer,
        remote.follow_id.parse::<Url>(),
        remote.object_url.parse::<Url>(),
    ) {
        let federation = services.federation();
        let me = federation.urls().actor.clone();
        let undo = Undo {
            id: federation.urls().activity(),
            kind: UndoType::Undo,
            actor: me.clone(),
            object: follow(follow_id, me, object),
        };
        if let Err(error) = federation.send(&peer.inbox, &undo).await {
            tracing::warn!(peer = %peer.domain, %error, "sending an Undo failed");
        }
    }
    Ok(())
}

/// A followed remote unit with its mirrored outputs and the links from them.
pub struct RemoteUnitView {
    pub unit: remote_units::Model,
    pub domain: String,
    pub outputs: Vec<remote_outputs::Model>,
    pub links: Vec<remote_links::Model>,
}

/// The remote units this instance follows (any logged-in user sees them, as they see internal nodes).
pub async fn remote_units(services: &Services, actor: &Actor) -> Result<Vec<RemoteUnitView>> {
    actor.require_user()?;
    let rows = remote_units::Entity::find()
        .order_by_asc(remote_units::Column::CreatedAt)
        .all(services.db())
        .await?;
    let domains: std::collections::HashMap<Uuid, String> = peers::Entity::find()
        .all(services.db())
        .await?
        .into_iter()
        .map(|p| (p.uuid, p.domain))
        .collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.uuid).collect();
    let outputs = remote_outputs::Entity::find()
        .filter(remote_outputs::Column::RemoteUnitUuid.is_in(ids.clone()))
        .order_by_asc(remote_outputs::Column::TopicName)
        .all(services.db())
        .await?;
    let links = remote_links::Entity::find()
        .filter(remote_links::Column::RemoteUnitUuid.is_in(ids))
        .order_by_asc(remote_links::Column::CreatedAt)
        .all(services.db())
        .await?;
    Ok(rows
        .into_iter()
        .map(|unit| RemoteUnitView {
            domain: domains.get(&unit.peer_uuid).cloned().unwrap_or_default(),
            outputs: outputs
                .iter()
                .filter(|o| o.remote_unit_uuid == unit.uuid)
                .cloned()
                .collect(),
            links: links
                .iter()
                .filter(|l| l.remote_unit_uuid == unit.uuid)
                .cloned()
                .collect(),
            unit,
        })
        .collect())
}

/// Which peers follow which units of this instance (admins only): (unit, peer domain).
pub async fn followers(services: &Services, actor: &Actor) -> Result<Vec<(Uuid, String)>> {
    actor.require_admin()?;
    let domains: std::collections::HashMap<Uuid, String> = peers::Entity::find()
        .all(services.db())
        .await?
        .into_iter()
        .map(|p| (p.uuid, p.domain))
        .collect();
    Ok(followers::Entity::find()
        .order_by_asc(followers::Column::CreatedAt)
        .all(services.db())
        .await?
        .into_iter()
        .filter_map(|f| Some((f.unit_uuid, domains.get(&f.peer_uuid)?.clone())))
        .collect())
}

/// The mirrored outputs linked to each of `inputs`: input uuid → [(mirror uuid, topic name)], for
/// schema.json and the broker's permissions.
pub async fn linked_mirrors(
    db: &impl ConnectionTrait,
    inputs: &[Uuid],
) -> Result<Vec<(Uuid, Uuid, String)>> {
    let links = remote_links::Entity::find()
        .filter(remote_links::Column::InputNodeUuid.is_in(inputs.iter().copied()))
        .order_by_asc(remote_links::Column::CreatedAt)
        .all(db)
        .await?;
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let accepted: HashSet<Uuid> = remote_units::Entity::find()
        .filter(remote_units::Column::Uuid.is_in(links.iter().map(|l| l.remote_unit_uuid)))
        .filter(remote_units::Column::Status.eq(RemoteStatus::Accepted.as_str()))
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.uuid)
        .collect();
    let mirrors = remote_outputs::Entity::find()
        .filter(remote_outputs::Column::RemoteUnitUuid.is_in(accepted.iter().copied()))
        .all(db)
        .await?;
    Ok(links
        .into_iter()
        .filter(|l| accepted.contains(&l.remote_unit_uuid))
        .filter_map(|l| {
            let mirror = mirrors.iter().find(|m| {
                m.remote_unit_uuid == l.remote_unit_uuid && m.topic_name == l.output_name
            })?;
            Some((l.input_node_uuid, mirror.uuid, mirror.topic_name.clone()))
        })
        .collect())
}

/// Forgets a peer's follow of a unit of this instance and tells the peer (a `Reject` of its follow), so
/// its mirrors of the unit become unavailable there.
pub(crate) async fn end_follow(services: &Services, row: followers::Model) -> Result<()> {
    let federation = services.federation();
    let unit = row.unit_uuid;
    followers::Entity::delete_by_id(row.uuid)
        .exec(services.db())
        .await?;
    let Some(peer) = peers::Entity::find_by_id(row.peer_uuid)
        .one(services.db())
        .await?
        .as_ref()
        .and_then(peer_of)
    else {
        return Ok(());
    };
    let Ok(follow_id) = row.follow_id.parse::<Url>() else {
        return Ok(());
    };
    let their = follow(follow_id, peer.actor.clone(), federation.urls().unit(unit));
    let reject = pepeunit_federation::inbox::reject(federation, their);
    if let Err(error) = federation.send(&peer.inbox, &reject).await {
        tracing::warn!(peer = %peer.domain, %unit, %error, "telling a follower that a unit went failed");
    }
    Ok(())
}

/// Tells the peers that follow `unit` when it is no longer theirs to see (deleted, made internal or
/// private), and forgets them.
pub async fn reconcile_unit(services: &Services, unit: Uuid) -> Result<()> {
    let rows = followers::Entity::find()
        .filter(followers::Column::UnitUuid.eq(unit))
        .all(services.db())
        .await?;
    if rows.is_empty() || host::shared_unit(services, unit).await?.is_some() {
        return Ok(());
    }
    for row in rows {
        end_follow(services, row).await?;
    }
    services.federation().followers_changed();
    tracing::info!(%unit, "a unit is no longer shared; its followers were told");
    Ok(())
}

/// Reacts to units going away or changing visibility; runs until the event stream closes.
pub async fn run_events(services: Services) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = services.unit_events().subscribe();
    loop {
        let unit = match events.recv().await {
            Ok(UnitEvent::Revoked(unit) | UnitEvent::VisibilityChanged(unit)) => unit,
            Ok(_) => continue,
            Err(RecvError::Lagged(_)) => {
                // Missed events: check every followed unit.
                let all = match followers::Entity::find().all(services.db()).await {
                    Ok(all) => all,
                    Err(error) => {
                        tracing::warn!(%error, "reading federation followers failed");
                        continue;
                    }
                };
                let units: HashSet<Uuid> = all.into_iter().map(|f| f.unit_uuid).collect();
                for unit in units {
                    if let Err(error) = reconcile_unit(&services, unit).await {
                        tracing::warn!(%unit, %error, "federation check failed");
                    }
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if let Err(error) = reconcile_unit(&services, unit).await {
            tracing::warn!(%unit, %error, "federation check failed");
        }
    }
}
