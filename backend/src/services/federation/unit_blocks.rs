//! Per-unit blocks: the creator of a unit (or an admin) keeps one remote instance away from that unit,
//! whatever the peering allows for the others.
//!
//! Blocking ends the instance's follow of the unit as if the unit had gone away (the instance is sent a
//! `Reject` of its follow: its mirrors become unavailable, its links go, its units get `schema_update`),
//! and from then on a follow of the unit from that instance is refused (403).

use chrono::Utc;
use pepeunit_federation::Domain;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use super::{end_follow, invalid};
use crate::entities::{
    federation_followers as followers, federation_peers as peers, federation_unit_blocks as blocks,
    units,
};
use crate::error::{Error, Result};
use crate::services::{Actor, Services, access};

/// Most instances one unit may block: a bound on what a unit's panel lists.
const MAX_BLOCKS_PER_UNIT: u64 = 1000;

/// The unit, if `actor` may change it (its creator or an admin).
async fn editable_unit(services: &Services, actor: &Actor, unit: Uuid) -> Result<units::Model> {
    let row = access::find_visible::<units::Entity>(services.db(), actor, unit, "unit").await?;
    access::ensure_can_edit(actor, row.creator_uuid)?;
    Ok(row)
}

/// Whether `domain` is blocked from `unit`.
pub async fn is_blocked(services: &Services, unit: Uuid, domain: &Domain) -> Result<bool> {
    Ok(blocks::Entity::find()
        .filter(blocks::Column::UnitUuid.eq(unit))
        .filter(blocks::Column::Domain.eq(domain.as_str()))
        .one(services.db())
        .await?
        .is_some())
}

/// The instances blocked from `unit` (its creator or an admin).
pub async fn unit_blocks(
    services: &Services,
    actor: &Actor,
    unit: Uuid,
) -> Result<Vec<blocks::Model>> {
    editable_unit(services, actor, unit).await?;
    Ok(blocks::Entity::find()
        .filter(blocks::Column::UnitUuid.eq(unit))
        .order_by_asc(blocks::Column::Domain)
        .all(services.db())
        .await?)
}

/// Blocks the instance at `address` (a domain or URL, in any spelling) from `unit`: its follow of the
/// unit ends at once, and it may not follow it again until unblocked.
pub async fn block_for_unit(
    services: &Services,
    actor: &Actor,
    unit: Uuid,
    address: &str,
) -> Result<blocks::Model> {
    let user = actor.require_user()?;
    editable_unit(services, actor, unit).await?;
    let domain = Domain::parse(address).map_err(|e| invalid("address", e.to_string()))?;
    if &domain == services.federation().domain() {
        return Err(invalid("address", "that is this instance"));
    }
    let existing = blocks::Entity::find()
        .filter(blocks::Column::UnitUuid.eq(unit))
        .filter(blocks::Column::Domain.eq(domain.as_str()))
        .one(services.db())
        .await?;
    let row = match existing {
        Some(row) => row,
        None => {
            let count = blocks::Entity::find()
                .filter(blocks::Column::UnitUuid.eq(unit))
                .count(services.db())
                .await?;
            if count >= MAX_BLOCKS_PER_UNIT {
                return Err(Error::Conflict(format!(
                    "a unit may block at most {MAX_BLOCKS_PER_UNIT} instances"
                )));
            }
            blocks::ActiveModel {
                uuid: Set(Uuid::new_v4()),
                unit_uuid: Set(unit),
                domain: Set(domain.to_string()),
                creator_uuid: Set(user.id.as_uuid()),
                created_at: Set(Utc::now()),
            }
            .insert(services.db())
            .await
            .map_err(|e| Error::on_unique(e, "that instance is already blocked from this unit"))?
        }
    };
    // The block is stored first: a follow arriving now is refused, then the current one ends.
    if let Some(peer) = peers::Entity::find()
        .filter(peers::Column::Domain.eq(domain.as_str()))
        .one(services.db())
        .await?
    {
        let follows = followers::Entity::find()
            .filter(followers::Column::PeerUuid.eq(peer.uuid))
            .filter(followers::Column::UnitUuid.eq(unit))
            .all(services.db())
            .await?;
        for follow in follows {
            end_follow(services, follow).await?;
        }
        services.federation().followers_changed();
    }
    tracing::info!(%unit, peer = %domain, "instance blocked from a unit");
    Ok(row)
}

/// Lifts a block of `domain` from `unit`; that instance may follow the unit again.
pub async fn unblock_for_unit(
    services: &Services,
    actor: &Actor,
    unit: Uuid,
    domain: &str,
) -> Result<()> {
    editable_unit(services, actor, unit).await?;
    let domain = Domain::parse(domain).map_err(|e| invalid("domain", e.to_string()))?;
    let deleted = blocks::Entity::delete_many()
        .filter(blocks::Column::UnitUuid.eq(unit))
        .filter(blocks::Column::Domain.eq(domain.as_str()))
        .exec(services.db())
        .await?;
    if deleted.rows_affected == 0 {
        return Err(Error::NotFound("unit block"));
    }
    Ok(())
}
