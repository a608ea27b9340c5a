//! Turns what happens to units into messages on their topics: the standard commands on `input_base_topic`
//! (payloads as the reference server sends them) and input values set by users.
//!
//! `update` commands and input values are retained, so a unit that was offline gets them when it subscribes;
//! the others only make sense to a unit that is connected now.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::{Broker, MessageBus};
use crate::entities::{unit_nodes, units};
use crate::error::Result;
use crate::services::units::events::{UnitCommand, UnitEvent};
use crate::services::units::schema_json::{base_topic, node_topic};
use crate::services::units::{UPDATE_PENDING, bundle, events};
use pepeunit_protocol::device::UpdateCommand;

fn command_topic(broker: &Broker, unit: Uuid, name: &str) -> String {
    base_topic(
        &broker.services().units().endpoint.domain,
        "input_base_topic",
        unit,
        name,
    )
}

/// Retains `unit`'s update command: its target commit and the SHA-256 of the archive it will download.
/// Without a computable hash the command still goes out, as the reference server's does: devices that
/// check hashes refuse it and say why, the others update as before.
async fn publish_update(broker: &Broker, unit: &units::Model) {
    let Some(commit) = unit.target_commit.clone() else {
        return;
    };
    let firmware_sha256 = match bundle::firmware_sha256(broker.services(), unit).await {
        Ok(hash) => Some(hash),
        Err(error) => {
            tracing::warn!(unit = %unit.uuid, %error, "hashing the update archive failed");
            None
        }
    };
    let payload = UpdateCommand {
        command: Some("Update".into()),
        commit,
        firmware_sha256,
    };
    match serde_json::to_vec(&payload) {
        Ok(bytes) => broker.publish(
            &command_topic(broker, unit.uuid, "update/pepeunit"),
            &bytes,
            true,
        ),
        Err(error) => tracing::warn!(%error, "encoding an update command failed"),
    }
}

fn send(broker: &Broker, unit: Uuid, name: &str, command: &str) {
    let payload = json!({ "COMMAND": command }).to_string();
    broker.publish(
        &command_topic(broker, unit, name),
        payload.as_bytes(),
        false,
    );
}

async fn handle(broker: &Broker, event: UnitEvent) -> Result<()> {
    match event {
        UnitEvent::EnvChanged(unit) => send(broker, unit, "env_update/pepeunit", "EnvUpdate"),
        UnitEvent::SchemaChanged(unit) => {
            broker.permissions_changed();
            broker.prune_subscriptions(unit).await?;
            send(broker, unit, "schema_update/pepeunit", "SchemaUpdate");
        }
        UnitEvent::TargetChanged { unit, commit } => {
            if let Some(row) = units::Entity::find_by_id(unit)
                .one(broker.services().db())
                .await?
                .filter(|row| row.target_commit.as_deref() == Some(commit.as_str()))
            {
                publish_update(broker, &row).await;
            }
        }
        UnitEvent::Revoked(unit) => {
            broker.permissions_changed();
            broker.disconnect(unit);
            broker.publish(&command_topic(broker, unit, "update/pepeunit"), b"", true);
        }
        // Federation follows visibility; units need not hear of it.
        UnitEvent::VisibilityChanged(_) => {}
        UnitEvent::InputSet { node, value } => {
            if let Some(row) = unit_nodes::Entity::find_by_id(node)
                .one(broker.services().db())
                .await?
            {
                let domain = &broker.services().units().endpoint.domain;
                let topic = node_topic(domain, row.uuid, &row.topic_name);
                broker.publish(&topic, value.as_bytes(), true);
            }
        }
        UnitEvent::Command { unit, command } => match command {
            UnitCommand::LogSync => send(broker, unit, "log_sync/pepeunit", "LogSync"),
            UnitCommand::Reset => send(broker, unit, "reset/pepeunit", "Reset"),
        },
    }
    Ok(())
}

/// Delivers unit events until the stream closes.
pub async fn run(broker: Broker, mut events: tokio::sync::broadcast::Receiver<events::UnitEvent>) {
    loop {
        match events.recv().await {
            Ok(event) => {
                if let Err(error) = handle(&broker, event).await {
                    tracing::warn!(%error, "delivering a unit event failed");
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "broker missed unit events; permissions reload");
                broker.permissions_changed();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Retains the update command of every unit whose update is still pending.
pub async fn restore_pending_updates(broker: &Broker) -> Result<()> {
    let pending = units::Entity::find()
        .filter(units::Column::UpdateStatus.eq(UPDATE_PENDING))
        .all(broker.services().db())
        .await?;
    for unit in pending {
        publish_update(broker, &unit).await;
    }
    Ok(())
}
