//! Instance-wide switches: open registration, manual verification, verification by e-mail, federation.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, Set};

use crate::entities::instance_settings::{self, SINGLETON_ID};
use crate::error::{Error, Result};
use crate::services::{Actor, Services};

/// A partial change an admin makes; absent fields stay as they are.
#[derive(Debug, Default, Clone)]
pub struct SettingsChange {
    pub registration_open: Option<bool>,
    pub manual_verification: Option<bool>,
    pub federation_enabled: Option<bool>,
    pub email_verification: Option<bool>,
}

/// The current settings; the migration guarantees the row exists.
pub async fn current(db: &impl ConnectionTrait) -> Result<instance_settings::Model> {
    instance_settings::Entity::find_by_id(SINGLETON_ID)
        .one(db)
        .await?
        .ok_or_else(|| Error::internal("instance_settings row is missing"))
}

/// Applies an admin's change.
pub async fn update(
    services: &Services,
    actor: &Actor,
    change: SettingsChange,
) -> Result<instance_settings::Model> {
    actor.require_admin()?;
    let mut row = current(services.db()).await?.into_active_model();
    if let Some(v) = change.registration_open {
        row.registration_open = Set(v);
    }
    if let Some(v) = change.manual_verification {
        row.manual_verification = Set(v);
    }
    if let Some(v) = change.federation_enabled {
        row.federation_enabled = Set(v);
    }
    if let Some(v) = change.email_verification {
        if v && !services.mail().enabled() {
            return Err(Error::Validation(crate::domain::InvalidValue::new(
                "emailVerification",
                "needs SMTP (smtp_url in the configuration); without it admins verify accounts by hand",
            )));
        }
        row.email_verification = Set(v);
    }
    row.updated_at = Set(Utc::now());
    Ok(row.update(services.db()).await?)
}
