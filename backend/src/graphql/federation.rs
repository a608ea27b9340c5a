//! Federation in GraphQL: peers and blocks (admins), remote units and links from their outputs (users).

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use crate::entities::{
    federation_peers, federation_remote_links, federation_remote_outputs, federation_unit_blocks,
};
use crate::error::GqlResult;
use crate::graphql::{actor, parse_uuid, services};
use crate::services::federation::{self as service, RemoteUnitView, unit_blocks};
use crate::services::units::schema_json::node_topic;

/// Another instance: asked to peer (`requested` by us, `pending` for our answer), `accepted`,
/// `rejected` or `blocked`.
#[derive(SimpleObject)]
pub struct FederationPeer {
    domain: String,
    actor_url: String,
    status: String,
    /// Whether this instance asked for the peering.
    requested_here: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<federation_peers::Model> for FederationPeer {
    fn from(row: federation_peers::Model) -> Self {
        Self {
            domain: row.domain,
            actor_url: row.actor_url,
            status: row.status,
            requested_here: row.requested_here,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// An output of a remote unit, mirrored here: read-only, its values come from its home instance.
#[derive(SimpleObject)]
pub struct RemoteOutput {
    /// The mirror's uuid on this instance.
    uuid: ID,
    /// The output's uuid on its home instance.
    remote_uuid: ID,
    name: String,
    /// The topic this instance publishes its values on, as linked inputs' schema.json lists it.
    topic: String,
    last_value: Option<String>,
    last_value_at: Option<DateTime<Utc>>,
}

/// A link from a remote output (by name) into an input of this instance.
#[derive(SimpleObject)]
pub struct RemoteLink {
    uuid: ID,
    remote_unit_uuid: ID,
    output_name: String,
    input_uuid: ID,
}

impl From<federation_remote_links::Model> for RemoteLink {
    fn from(row: federation_remote_links::Model) -> Self {
        Self {
            uuid: ID(row.uuid.to_string()),
            remote_unit_uuid: ID(row.remote_unit_uuid.to_string()),
            output_name: row.output_name,
            input_uuid: ID(row.input_node_uuid.to_string()),
        }
    }
}

/// A unit of a peer that this instance follows.
#[derive(SimpleObject)]
pub struct RemoteUnit {
    /// This instance's id of the follow.
    uuid: ID,
    /// `<unit uuid>@<domain>`.
    address: String,
    peer_domain: String,
    /// The unit's name on its home instance, once it accepted.
    name: Option<String>,
    /// `pending` (asked), `accepted`, or `gone` (refused, deleted or hidden there: links removed).
    status: String,
    outputs: Vec<RemoteOutput>,
    links: Vec<RemoteLink>,
}

fn remote_output(domain: &str, row: federation_remote_outputs::Model) -> RemoteOutput {
    RemoteOutput {
        uuid: ID(row.uuid.to_string()),
        remote_uuid: ID(row.remote_node_uuid.to_string()),
        topic: node_topic(domain, row.uuid, &row.topic_name),
        name: row.topic_name,
        last_value: row.last_value,
        last_value_at: row.last_value_at,
    }
}

/// A peer following a unit of this instance.
#[derive(SimpleObject)]
pub struct UnitFollower {
    unit_uuid: ID,
    peer_domain: String,
}

/// An output of a remote unit as its home instance shows it now (not mirrored here).
#[derive(SimpleObject)]
pub struct RemoteOutputPreview {
    /// The output's uuid on its home instance.
    remote_uuid: ID,
    name: String,
    last_value: Option<String>,
    last_value_at: Option<DateTime<Utc>>,
}

/// A remote unit read from its home instance without following it: what linking one of its outputs
/// would bring.
#[derive(SimpleObject)]
pub struct RemoteUnitPreview {
    /// `<unit uuid>@<domain>`, as `linkRemoteOutput` takes it.
    address: String,
    peer_domain: String,
    name: String,
    outputs: Vec<RemoteOutputPreview>,
}

/// A remote instance kept away from one unit of this instance.
#[derive(SimpleObject)]
pub struct UnitBlock {
    unit_uuid: ID,
    domain: String,
    created_at: DateTime<Utc>,
}

impl From<federation_unit_blocks::Model> for UnitBlock {
    fn from(row: federation_unit_blocks::Model) -> Self {
        Self {
            unit_uuid: ID(row.unit_uuid.to_string()),
            domain: row.domain,
            created_at: row.created_at,
        }
    }
}

#[derive(Default)]
pub struct FederationQuery;

#[Object]
impl FederationQuery {
    /// Every instance this one knows: peers, requests and blocks (admins only).
    async fn federation_peers(&self, ctx: &Context<'_>) -> Result<Vec<FederationPeer>> {
        let rows = service::peers(services(ctx)?, &actor(ctx)).await.gql()?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The URL of this instance's actor, which other instances' admins peer with.
    async fn federation_actor_url(&self, ctx: &Context<'_>) -> Result<String> {
        Ok(services(ctx)?.federation().urls().actor.to_string())
    }

    /// Which peers follow which units of this instance (admins only).
    async fn federation_followers(&self, ctx: &Context<'_>) -> Result<Vec<UnitFollower>> {
        let rows = service::followers(services(ctx)?, &actor(ctx))
            .await
            .gql()?;
        Ok(rows
            .into_iter()
            .map(|(unit, peer)| UnitFollower {
                unit_uuid: ID(unit.to_string()),
                peer_domain: peer,
            })
            .collect())
    }

    /// Reads the remote unit `address` (`<uuid>@<domain>` or its URL) from its home instance, an accepted
    /// peer, without following it: its name and outputs with their last values.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn preview_remote_unit(
        &self,
        ctx: &Context<'_>,
        address: String,
    ) -> Result<RemoteUnitPreview> {
        let (domain, unit) = service::preview_remote_unit(services(ctx)?, &actor(ctx), &address)
            .await
            .gql()?;
        Ok(RemoteUnitPreview {
            address: format!("{}@{}", unit.uuid, domain),
            peer_domain: domain.to_string(),
            name: unit.name,
            outputs: unit
                .outputs
                .into_iter()
                .map(|o| RemoteOutputPreview {
                    remote_uuid: ID(o.uuid.to_string()),
                    name: o.name,
                    last_value: o.last_value,
                    last_value_at: o.last_value_at,
                })
                .collect(),
        })
    }

    /// The instances blocked from the unit `unitUuid` (its creator or an admin).
    async fn unit_blocked_instances(
        &self,
        ctx: &Context<'_>,
        unit_uuid: ID,
    ) -> Result<Vec<UnitBlock>> {
        let unit = parse_uuid(&unit_uuid).gql()?;
        let rows = unit_blocks::unit_blocks(services(ctx)?, &actor(ctx), unit)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The remote units this instance follows, with their mirrored outputs and links.
    async fn remote_units(&self, ctx: &Context<'_>) -> Result<Vec<RemoteUnit>> {
        let services = services(ctx)?;
        let domain = services.units().endpoint.domain.clone();
        let rows = service::remote_units(services, &actor(ctx)).await.gql()?;
        Ok(rows
            .into_iter()
            .map(|view: RemoteUnitView| RemoteUnit {
                uuid: ID(view.unit.uuid.to_string()),
                address: format!("{}@{}", view.unit.remote_unit_uuid, view.domain),
                peer_domain: view.domain,
                name: view.unit.name,
                status: view.unit.status,
                outputs: view
                    .outputs
                    .into_iter()
                    .map(|o| remote_output(&domain, o))
                    .collect(),
                links: view.links.into_iter().map(Into::into).collect(),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct FederationMutation;

#[Object]
impl FederationMutation {
    /// Asks the instance at `address` (a domain, or its URL) to peer (admins only).
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn request_peering(&self, ctx: &Context<'_>, address: String) -> Result<FederationPeer> {
        Ok(
            service::request_peering(services(ctx)?, &actor(ctx), &address)
                .await
                .gql()?
                .into(),
        )
    }

    /// Accepts a request to peer (admins only).
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn accept_peering(&self, ctx: &Context<'_>, domain: String) -> Result<FederationPeer> {
        Ok(
            service::accept_peering(services(ctx)?, &actor(ctx), &domain)
                .await
                .gql()?
                .into(),
        )
    }

    /// Refuses a request to peer (admins only).
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn reject_peering(&self, ctx: &Context<'_>, domain: String) -> Result<bool> {
        service::reject_peering(services(ctx)?, &actor(ctx), &domain)
            .await
            .gql()?;
        Ok(true)
    }

    /// Ends a peering or withdraws a request; the other instance is told (admins only).
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn end_peering(&self, ctx: &Context<'_>, domain: String) -> Result<bool> {
        service::end_peering(services(ctx)?, &actor(ctx), &domain)
            .await
            .gql()?;
        Ok(true)
    }

    /// Blocks an instance, named in any spelling (admins only).
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn block_instance(&self, ctx: &Context<'_>, address: String) -> Result<FederationPeer> {
        Ok(
            service::block_instance(services(ctx)?, &actor(ctx), &address)
                .await
                .gql()?
                .into(),
        )
    }

    /// Lifts a block (admins only).
    async fn unblock_instance(&self, ctx: &Context<'_>, domain: String) -> Result<bool> {
        service::unblock_instance(services(ctx)?, &actor(ctx), &domain)
            .await
            .gql()?;
        Ok(true)
    }

    /// Blocks the instance at `address` (a domain or URL, any spelling) from the unit `unitUuid` alone
    /// (its creator or an admin): its follow of the unit ends (its mirrors become unavailable there) and
    /// it may not follow the unit again until unblocked.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn block_instance_for_unit(
        &self,
        ctx: &Context<'_>,
        unit_uuid: ID,
        address: String,
    ) -> Result<UnitBlock> {
        let unit = parse_uuid(&unit_uuid).gql()?;
        Ok(
            unit_blocks::block_for_unit(services(ctx)?, &actor(ctx), unit, &address)
                .await
                .gql()?
                .into(),
        )
    }

    /// Lifts a block of `domain` from the unit `unitUuid`.
    async fn unblock_instance_for_unit(
        &self,
        ctx: &Context<'_>,
        unit_uuid: ID,
        domain: String,
    ) -> Result<bool> {
        let unit = parse_uuid(&unit_uuid).gql()?;
        unit_blocks::unblock_for_unit(services(ctx)?, &actor(ctx), unit, &domain)
            .await
            .gql()?;
        Ok(true)
    }

    /// Links output `output` (its name) of the remote unit `unit` (`<uuid>@<domain>` or its URL) to the
    /// input `inputUuid`; it carries values once the unit's home instance accepts.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn link_remote_output(
        &self,
        ctx: &Context<'_>,
        unit: String,
        output: String,
        input_uuid: ID,
    ) -> Result<RemoteLink> {
        let input = parse_uuid(&input_uuid).gql()?;
        Ok(
            service::link_remote_output(services(ctx)?, &actor(ctx), &unit, &output, input)
                .await
                .gql()?
                .into(),
        )
    }

    async fn unlink_remote_output(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::unlink_remote_output(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }

    /// Stops following a remote unit (its links go); its home instance is told.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn unfollow_remote_unit(&self, ctx: &Context<'_>, uuid: ID) -> Result<bool> {
        let uuid = parse_uuid(&uuid).gql()?;
        service::unfollow_remote_unit(services(ctx)?, &actor(ctx), uuid)
            .await
            .gql()?;
        Ok(true)
    }
}
