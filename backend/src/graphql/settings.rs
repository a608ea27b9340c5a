//! Instance settings in GraphQL.

use async_graphql::{Context, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use crate::entities::instance_settings;
use crate::error::GqlResult;
use crate::graphql::{actor, services};
use crate::services::settings::{self as service, SettingsChange};

/// Switches that apply to the whole instance.
#[derive(SimpleObject)]
pub struct InstanceSettings {
    registration_open: bool,
    manual_verification: bool,
    federation_enabled: bool,
    /// New accounts confirm their e-mail address by a mailed link before they may log in.
    email_verification: bool,
    /// Whether the instance can send mail (`smtp_url` is set): without it `emailVerification` cannot be on.
    mail_enabled: bool,
    updated_at: DateTime<Utc>,
}

impl InstanceSettings {
    fn new(row: instance_settings::Model, services: &crate::services::Services) -> Self {
        Self {
            registration_open: row.registration_open,
            manual_verification: row.manual_verification,
            federation_enabled: row.federation_enabled,
            email_verification: row.email_verification,
            mail_enabled: services.mail().enabled(),
            updated_at: row.updated_at,
        }
    }
}

/// Where units reach the embedded MQTT broker, as their env.json says.
#[derive(SimpleObject)]
pub struct MqttBroker {
    host: String,
    port: u16,
    /// The default port, when another program held it at start-up and the broker fell back to `port`;
    /// units made before may name the old port in their env.json.
    default_port_taken: Option<u16>,
}

/// The outcome of the last scheduled backup (see `backup_dir` in the configuration).
#[derive(SimpleObject)]
pub struct BackupRun {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    /// The archive written in `backup_dir`, when the run succeeded.
    file: Option<String>,
    bytes: Option<u64>,
    /// Rows of all tables in the archive.
    rows: Option<u64>,
    /// Why the run failed, when it did.
    error: Option<String>,
    /// Older archives removed to keep `backup_keep`.
    removed: Vec<String>,
}

impl From<crate::backup::schedule::BackupRun> for BackupRun {
    fn from(run: crate::backup::schedule::BackupRun) -> Self {
        Self {
            started_at: run.started_at,
            finished_at: run.finished_at,
            file: run.file,
            bytes: run.bytes,
            rows: run.rows,
            error: run.error,
            removed: run.removed,
        }
    }
}

/// Fields left out stay unchanged.
#[derive(InputObject)]
pub struct InstanceSettingsInput {
    registration_open: Option<bool>,
    manual_verification: Option<bool>,
    federation_enabled: Option<bool>,
    /// Needs SMTP (`mailEnabled`).
    email_verification: Option<bool>,
}

#[derive(Default)]
pub struct SettingsQuery;

#[Object]
impl SettingsQuery {
    /// The instance settings; public, so a sign-up page knows whether registration is open.
    async fn instance_settings(&self, ctx: &Context<'_>) -> Result<InstanceSettings> {
        let services = services(ctx)?;
        Ok(InstanceSettings::new(
            service::current(services.db()).await.gql()?,
            services,
        ))
    }

    /// The last scheduled backup (admins only); null when `backup_dir` is not set or none has run yet.
    async fn last_backup(&self, ctx: &Context<'_>) -> Result<Option<BackupRun>> {
        actor(ctx).require_admin().gql()?;
        let status = ctx.data::<crate::backup::schedule::BackupStatus>()?;
        Ok(status.last().map(BackupRun::from))
    }

    /// Where units reach the MQTT broker; public, like every unit's env.json.
    async fn mqtt_broker(&self, ctx: &Context<'_>) -> Result<MqttBroker> {
        let endpoint = &services(ctx)?.units().endpoint;
        Ok(MqttBroker {
            host: endpoint.mqtt_host.clone(),
            port: endpoint.mqtt_port,
            default_port_taken: endpoint.mqtt_default_port_taken,
        })
    }
}

#[derive(Default)]
pub struct SettingsMutation;

#[Object]
impl SettingsMutation {
    /// Changes instance settings (admins only).
    async fn update_instance_settings(
        &self,
        ctx: &Context<'_>,
        input: InstanceSettingsInput,
    ) -> Result<InstanceSettings> {
        let services = services(ctx)?;
        let actor = actor(ctx);
        let change = SettingsChange {
            registration_open: input.registration_open,
            manual_verification: input.manual_verification,
            federation_enabled: input.federation_enabled,
            email_verification: input.email_verification,
        };
        Ok(InstanceSettings::new(
            service::update(services, &actor, change).await.gql()?,
            services,
        ))
    }
}
