//! A short-lived cache of what token checks need (role, status, token version) per user.
//!
//! Every authenticated request checks that its token's version is current and the account active; without
//! the cache that is one database read per request. Every change to those fields on this instance
//! invalidates the entry at once; the time-to-live bounds how long another instance sharing the database
//! may take to notice a revocation.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::{UserRole, UserStatus};

/// How long an entry is trusted without looking at the database.
pub const TTL: Duration = Duration::from_secs(10);

/// Above this many entries, expired ones are swept on insert.
const SWEEP_ABOVE: usize = 50_000;

#[derive(Debug, Clone, Copy)]
pub struct CachedUser {
    pub role: UserRole,
    pub status: UserStatus,
    pub token_version: i32,
    at: Instant,
}

#[derive(Default)]
pub struct SessionCache {
    entries: RwLock<HashMap<Uuid, CachedUser>>,
}

impl SessionCache {
    pub fn get(&self, user: Uuid) -> Option<CachedUser> {
        let entries = self.entries.read().ok()?;
        entries.get(&user).filter(|e| e.at.elapsed() < TTL).copied()
    }

    /// Remembers a user's current facts and returns them.
    pub fn put(
        &self,
        user: Uuid,
        role: UserRole,
        status: UserStatus,
        token_version: i32,
    ) -> CachedUser {
        let entry = CachedUser {
            role,
            status,
            token_version,
            at: Instant::now(),
        };
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > SWEEP_ABOVE {
                entries.retain(|_, e| e.at.elapsed() < TTL);
            }
            entries.insert(user, entry);
        }
        entry
    }

    /// Forgets a user after a change to their role, status, password or sessions.
    pub fn invalidate(&self, user: Uuid) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(&user);
        }
    }
}
