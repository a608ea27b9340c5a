//! The one place visibility is decided: who may see and who may change a node.
//!
//! - `public`: anyone, logged in or not;
//! - `federated`: any logged-in user of this instance, and (through federation, not here) the instances
//!   it peers with;
//! - `internal`: any logged-in user of this instance;
//! - `private`: the creator, the users the creator granted it to, and admins (who run the instance and
//!   must be able to moderate it).
//!
//! Single reads go through [`can_view`]; lists through [`visible_to`], which turns the same rule into a SQL
//! condition so pagination and counts stay right.

use pepeunit_protocol::Visibility;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, Select};
use uuid::Uuid;

use crate::entities::{permissions, repo_units, units};
use crate::error::{Error, Result};
use crate::services::Actor;

/// A node kind whose rows carry a creator and a visibility, and can be granted through `permissions`.
pub trait Guarded: EntityTrait {
    fn uuid_column() -> Self::Column;
    fn creator_column() -> Self::Column;
    fn visibility_column() -> Self::Column;
    /// The `permissions` column that points at this kind.
    fn grant_column() -> permissions::Column;
    fn creator(model: &Self::Model) -> Uuid;
    fn visibility(model: &Self::Model) -> Visibility;
    fn uuid(model: &Self::Model) -> Uuid;
}

/// Implements [`Guarded`] for an entity with `uuid`, `creator_uuid` and `visibility` columns.
macro_rules! guarded {
    ($module:ident, $grant:ident) => {
        impl Guarded for $module::Entity {
            fn uuid_column() -> Self::Column {
                $module::Column::Uuid
            }
            fn creator_column() -> Self::Column {
                $module::Column::CreatorUuid
            }
            fn visibility_column() -> Self::Column {
                $module::Column::Visibility
            }
            fn grant_column() -> permissions::Column {
                permissions::Column::$grant
            }
            fn creator(model: &Self::Model) -> Uuid {
                model.creator_uuid
            }
            fn visibility(model: &Self::Model) -> Visibility {
                model.visibility
            }
            fn uuid(model: &Self::Model) -> Uuid {
                model.uuid
            }
        }
    };
}

guarded!(repo_units, RepoUnitUuid);
guarded!(units, UnitUuid);

/// The visibility rule for one node, given whether `actor` holds a grant for it.
pub fn can_view(actor: &Actor, creator: Uuid, visibility: Visibility, granted: bool) -> bool {
    match (visibility, actor) {
        (Visibility::Public, _) => true,
        (_, Actor::Anonymous) => false,
        (Visibility::Federated | Visibility::Internal, Actor::User(_)) => true,
        (Visibility::Private, Actor::User(user)) => {
            actor.is_admin() || user.id.as_uuid() == creator || granted
        }
    }
}

/// Only the creator and admins change or delete a node.
pub fn ensure_can_edit(actor: &Actor, creator: Uuid) -> Result<()> {
    let user = actor.require_user()?;
    if actor.is_admin() || user.id.as_uuid() == creator {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "only the creator or an admin may change this".into(),
        ))
    }
}

/// Narrows a query to the rows `actor` may see.
pub fn visible_to<E: Guarded>(select: Select<E>, actor: &Actor) -> Select<E> {
    select.filter(visibility_condition::<E>(actor))
}

fn visibility_condition<E: Guarded>(actor: &Actor) -> Condition {
    let public = E::visibility_column().eq(Visibility::Public);
    match actor {
        Actor::Anonymous => Condition::all().add(public),
        _ if actor.is_admin() => Condition::all(),
        Actor::User(user) => {
            let me = user.id.as_uuid();
            let granted = Query::select()
                .column(E::grant_column())
                .from(permissions::Entity)
                .and_where(Expr::col(permissions::Column::GranteeUserUuid).eq(me))
                .and_where(Expr::col(E::grant_column()).is_not_null())
                .to_owned();
            Condition::any()
                .add(public)
                .add(E::visibility_column().eq(Visibility::Federated))
                .add(E::visibility_column().eq(Visibility::Internal))
                .add(E::creator_column().eq(me))
                .add(E::uuid_column().in_subquery(granted))
        }
    }
}

/// Whether `actor` holds a grant for the node `uuid` of kind `E`.
async fn is_granted<E: Guarded>(
    db: &impl ConnectionTrait,
    actor: &Actor,
    uuid: Uuid,
) -> Result<bool> {
    let Some(me) = actor.user_id() else {
        return Ok(false);
    };
    let found = permissions::Entity::find()
        .filter(permissions::Column::GranteeUserUuid.eq(me.as_uuid()))
        .filter(E::grant_column().eq(uuid))
        .one(db)
        .await?;
    Ok(found.is_some())
}

/// Loads one node if `actor` may see it; `NOT_FOUND` otherwise, so private nodes do not reveal they exist.
pub async fn find_visible<E>(
    db: &impl ConnectionTrait,
    actor: &Actor,
    uuid: Uuid,
    what: &'static str,
) -> Result<E::Model>
where
    E: Guarded,
    E::Model: Sync,
{
    let model = E::find()
        .filter(E::uuid_column().eq(uuid))
        .one(db)
        .await?
        .ok_or(Error::NotFound(what))?;
    let granted = E::visibility(&model) == Visibility::Private
        && !actor.is_admin()
        && actor.user_id().map(|u| u.as_uuid()) != Some(E::creator(&model))
        && is_granted::<E>(db, actor, E::uuid(&model)).await?;
    if can_view(actor, E::creator(&model), E::visibility(&model), granted) {
        Ok(model)
    } else {
        Err(Error::NotFound(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserRole;
    use crate::services::AuthUser;

    fn user(role: UserRole) -> (Actor, Uuid) {
        let id = Uuid::new_v4();
        (
            Actor::User(AuthUser {
                id: id.into(),
                role,
            }),
            id,
        )
    }

    #[test]
    fn the_matrix() {
        let (owner, owner_id) = user(UserRole::User);
        let (other, _) = user(UserRole::User);
        let (admin, _) = user(UserRole::Admin);
        let anon = Actor::Anonymous;
        // (actor, [public, federated, internal, private])
        let expected = [
            (&anon, [true, false, false, false]),
            (&other, [true, true, true, false]),
            (&owner, [true, true, true, true]),
            (&admin, [true, true, true, true]),
        ];
        for (actor, row) in expected {
            for (visibility, want) in Visibility::ALL.into_iter().zip(row) {
                assert_eq!(
                    can_view(actor, owner_id, visibility, false),
                    want,
                    "{actor:?} {visibility}"
                );
            }
        }
        assert!(can_view(&other, owner_id, Visibility::Private, true));
        assert!(!can_view(&anon, owner_id, Visibility::Private, true));
    }

    #[test]
    fn only_creator_and_admin_edit() {
        let (owner, owner_id) = user(UserRole::User);
        let (other, _) = user(UserRole::User);
        let (admin, _) = user(UserRole::Admin);
        assert!(ensure_can_edit(&owner, owner_id).is_ok());
        assert!(ensure_can_edit(&admin, owner_id).is_ok());
        assert!(matches!(
            ensure_can_edit(&other, owner_id),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            ensure_can_edit(&Actor::Anonymous, owner_id),
            Err(Error::Unauthenticated)
        ));
    }
}
