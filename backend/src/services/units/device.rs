//! The calls a device makes (and users make on its behalf), authenticated by the unit's token.
//!
//! Who may do what:
//! - env.json, the bundle (which holds env.json) and state storage: the unit itself and its creator; not
//!   even admins read a device's secrets;
//! - schema.json: the unit, its creator and admins (topics only, no secrets);
//! - look-ups of nodes and units: a unit sees what its creator may see (as a plain user), never more.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::{Map, Value};
use uuid::Uuid;

use pepeunit_protocol::UserId;

use crate::domain::{UserRole, UserStatus};
use crate::entities::units;
use crate::error::{Error, Result};
use crate::services::units::env::StoredEnv;
use crate::services::{Actor, AuthUser, Services, access, users};

/// Who is calling the device API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCaller {
    /// A unit with its current token.
    Unit { uuid: Uuid, creator: Uuid },
    /// A user with an access token.
    User(Actor),
}

impl DeviceCaller {
    /// The actor whose visibility look-ups use.
    pub fn viewer(&self) -> Actor {
        match self {
            DeviceCaller::Unit { creator, .. } => Actor::User(AuthUser {
                id: UserId::from(*creator),
                role: UserRole::User,
            }),
            DeviceCaller::User(actor) => *actor,
        }
    }
}

/// Establishes the caller from `x-auth-token`: a unit's current token, or a user's access token.
pub async fn authenticate(services: &Services, token: &str) -> Result<DeviceCaller> {
    if let Ok(claims) = services.tokens().verify_unit(token) {
        let unit = units::Entity::find_by_id(claims.uuid)
            .one(services.db())
            .await?
            .ok_or(Error::InvalidToken)?;
        if unit.token_version != claims.ver {
            return Err(Error::InvalidToken);
        }
        // A blocked creator's units are refused with them.
        let creator = users::current(services, unit.creator_uuid).await?;
        if creator.is_none_or(|c| c.status != UserStatus::Verified) {
            return Err(Error::InvalidToken);
        }
        return Ok(DeviceCaller::Unit {
            uuid: unit.uuid,
            creator: unit.creator_uuid,
        });
    }
    Ok(DeviceCaller::User(
        users::authenticate(services, token).await?,
    ))
}

/// Which callers a device resource admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// The unit and its creator.
    Owner,
    /// The unit, its creator and admins.
    OwnerOrAdmin,
}

/// Loads `uuid` for `caller`: `NOT_FOUND` when the caller may not even see it, `FORBIDDEN` when it may see
/// it but not this resource.
async fn load(
    services: &Services,
    caller: &DeviceCaller,
    uuid: Uuid,
    audience: Audience,
) -> Result<units::Model> {
    match caller {
        DeviceCaller::Unit { uuid: me, .. } if *me == uuid => units::Entity::find_by_id(uuid)
            .one(services.db())
            .await?
            .ok_or(Error::NotFound("unit")),
        DeviceCaller::Unit { .. } => {
            access::find_visible::<units::Entity>(services.db(), &caller.viewer(), uuid, "unit")
                .await?;
            Err(Error::Forbidden(
                "a unit may only read its own files".into(),
            ))
        }
        DeviceCaller::User(actor) => {
            let unit =
                access::find_visible::<units::Entity>(services.db(), actor, uuid, "unit").await?;
            let user = actor.require_user()?;
            let is_creator = user.id.as_uuid() == unit.creator_uuid;
            if is_creator || (audience == Audience::OwnerOrAdmin && actor.is_admin()) {
                Ok(unit)
            } else {
                Err(Error::Forbidden(
                    "only the unit and its creator may read this".into(),
                ))
            }
        }
    }
}

/// env.json, for the unit and its creator.
pub async fn env(
    services: &Services,
    caller: &DeviceCaller,
    uuid: Uuid,
) -> Result<Map<String, Value>> {
    let unit = load(services, caller, uuid, Audience::Owner).await?;
    Ok(StoredEnv::open(services, &unit)?.render(services, &unit))
}

/// schema.json, for the unit, its creator and admins.
pub async fn schema(
    services: &Services,
    caller: &DeviceCaller,
    uuid: Uuid,
) -> Result<Map<String, Value>> {
    let unit = load(services, caller, uuid, Audience::OwnerOrAdmin).await?;
    super::schema_json::render(services, &unit).await
}

/// The unit row, when the caller may download its bundle.
pub async fn for_bundle(
    services: &Services,
    caller: &DeviceCaller,
    uuid: Uuid,
) -> Result<units::Model> {
    load(services, caller, uuid, Audience::Owner).await
}

/// Most bytes a unit may keep in state storage.
pub const STATE_STORAGE_LIMIT: usize = 64 * 1024;

/// Replaces the unit's state storage; an empty string clears it. Sealed at rest: it may hold anything.
pub async fn set_state_storage(
    services: &Services,
    caller: &DeviceCaller,
    uuid: Uuid,
    state: &str,
) -> Result<()> {
    if state.len() > STATE_STORAGE_LIMIT {
        return Err(Error::Validation(crate::domain::InvalidValue {
            field: "state",
            message: format!("must be at most {STATE_STORAGE_LIMIT} bytes"),
        }));
    }
    let unit = load(services, caller, uuid, Audience::Owner).await?;
    let sealed = if state.is_empty() {
        None
    } else {
        Some(
            services
                .master_key()
                .encrypt(state.as_bytes())
                .map_err(Error::internal)?,
        )
    };
    let mut active = unit.into_active_model();
    active.state_storage = Set(sealed);
    active.updated_at = Set(Utc::now());
    active.update(services.db()).await?;
    Ok(())
}

/// The unit's state storage, `""` when empty.
pub async fn state_storage(
    services: &Services,
    caller: &DeviceCaller,
    uuid: Uuid,
) -> Result<String> {
    let unit = load(services, caller, uuid, Audience::Owner).await?;
    open_state_storage(services, &unit)
}

/// Decrypts a unit's state storage.
pub fn open_state_storage(services: &Services, unit: &units::Model) -> Result<String> {
    match &unit.state_storage {
        None => Ok(String::new()),
        Some(sealed) => {
            let bytes = services
                .master_key()
                .decrypt(sealed)
                .map_err(Error::internal)?;
            String::from_utf8(bytes).map_err(Error::internal)
        }
    }
}

/// Units owning any of `nodes` that the caller may see.
pub async fn units_of_nodes(
    services: &Services,
    caller: &DeviceCaller,
    nodes: &[Uuid],
) -> Result<Vec<units::Model>> {
    use crate::entities::unit_nodes;
    use sea_orm::QuerySelect;
    let owners: Vec<Uuid> = unit_nodes::Entity::find()
        .select_only()
        .column(unit_nodes::Column::UnitUuid)
        .filter(unit_nodes::Column::Uuid.is_in(nodes.iter().copied()))
        .into_tuple()
        .all(services.db())
        .await?;
    Ok(access::visible_to(units::Entity::find(), &caller.viewer())
        .filter(units::Column::Uuid.is_in(owners))
        .all(services.db())
        .await?)
}
