//! Who is asking: the subject every access decision is made for.

use pepeunit_protocol::UserId;

use crate::domain::UserRole;
use crate::error::{Error, Result};

/// An authenticated user, as established from a valid, unrevoked access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub id: UserId,
    pub role: UserRole,
}

/// The caller of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Anonymous,
    User(AuthUser),
}

impl Actor {
    /// The logged-in user, or `UNAUTHENTICATED`.
    pub fn require_user(&self) -> Result<AuthUser> {
        match self {
            Actor::User(user) => Ok(*user),
            Actor::Anonymous => Err(Error::Unauthenticated),
        }
    }

    /// A logged-in admin, or `UNAUTHENTICATED` / `FORBIDDEN`.
    pub fn require_admin(&self) -> Result<AuthUser> {
        let user = self.require_user()?;
        if user.role == UserRole::Admin {
            Ok(user)
        } else {
            Err(Error::Forbidden("this needs an admin".into()))
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Actor::User(AuthUser {
                role: UserRole::Admin,
                ..
            })
        )
    }

    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Actor::User(user) => Some(user.id),
            Actor::Anonymous => None,
        }
    }
}
