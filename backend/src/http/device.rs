//! The device REST API under `/api/v1`, wire-compatible with the reference client (`pepeunit-client`).
//!
//! Authentication is `x-auth-token` (a unit's token or a user's access token), or `Authorization: Bearer`;
//! bundle links from the web app carry a short-lived `download_token` instead. Shapes follow the
//! reference server: env and schema are JSON objects, state storage answers a JSON string, look-ups
//! answer `{count, unit_nodes}` / `{count, units}`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use pepeunit_protocol::Visibility;
use pepeunit_repositories::{ArchiveFormat, DeflateStream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use crate::domain::InvalidValue;
use crate::entities::{unit_nodes, units};
use crate::error::{Error, Result};
use crate::services::units::device::{self, DeviceCaller};
use crate::services::units::{bundle, data, links, nodes};

pub(super) fn token(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        return Some(token.trim());
    }
    super::bearer(headers)
}

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<DeviceCaller> {
    let token = token(headers).ok_or(Error::Unauthenticated)?;
    device::authenticate(&state.services, token).await
}

fn unit_uuid(raw: &str) -> Result<Uuid> {
    raw.parse().map_err(|_| Error::NotFound("unit"))
}

/// The query string as pairs; repeated keys stay repeated (`unit_node_uuids=a&unit_node_uuids=b`).
fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn number<T: std::str::FromStr>(
    pairs: &[(String, String)],
    key: &'static str,
    default: T,
) -> Result<T> {
    match pairs.iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => v.parse().map_err(|_| {
            Error::Validation(InvalidValue {
                field: key,
                message: format!("{v:?} is not a number"),
            })
        }),
    }
}

fn uuids(pairs: &[(String, String)], key: &'static str) -> Result<Vec<Uuid>> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.trim().parse().map_err(|_| {
                Error::Validation(InvalidValue {
                    field: key,
                    message: format!("{v:?} is not a uuid"),
                })
            })
        })
        .collect()
}

pub async fn env(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&state, &headers).await?;
    let env = device::env(&state.services, &caller, unit_uuid(&uuid)?).await?;
    Ok(Json(env).into_response())
}

pub async fn schema(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&state, &headers).await?;
    let schema = device::schema(&state.services, &caller, unit_uuid(&uuid)?).await?;
    Ok(Json(schema).into_response())
}

/// `GET /units/firmware/{tgz|tar|zip}/{uuid}`; tgz takes `wbits` and `level` as zlib does (device default
/// 9 and 9), zip takes `level`; `unit_files=false` leaves out the generated env.json and schema.json.
pub async fn firmware(
    State(state): State<AppState>,
    Path((kind, uuid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let pairs = pairs(query.as_deref());
    let unit = unit_uuid(&uuid)?;
    let caller = match pairs.iter().find(|(k, _)| k == "download_token") {
        Some((_, link)) => {
            let for_unit = state.services.tokens().verify_download(link)?;
            if for_unit != unit {
                return Err(Error::InvalidToken);
            }
            let row = units::Entity::find_by_id(unit)
                .one(state.services.db())
                .await?
                .ok_or(Error::NotFound("unit"))?;
            // A link outlives nothing: once its creator is blocked (or unverified), it stops working.
            let creator =
                crate::services::users::current(&state.services, row.creator_uuid).await?;
            if creator.is_none_or(|c| c.status != crate::domain::UserStatus::Verified) {
                return Err(Error::InvalidToken);
            }
            DeviceCaller::Unit {
                uuid: row.uuid,
                creator: row.creator_uuid,
            }
        }
        None => caller(&state, &headers).await?,
    };
    let level: i32 = number(&pairs, "level", 9)?;
    let format = match kind.as_str() {
        "tgz" => {
            let wbits: i32 = number(&pairs, "wbits", 9)?;
            let stream = DeflateStream::parse(wbits, level).map_err(|message| {
                Error::Validation(InvalidValue {
                    field: "wbits",
                    message,
                })
            })?;
            ArchiveFormat::CompressedTar(stream)
        }
        "tar" => ArchiveFormat::Tar,
        "zip" => ArchiveFormat::Zip {
            level: u32::try_from(level.clamp(0, 9)).unwrap_or(6),
        },
        _ => return Err(Error::NotFound("archive format")),
    };
    let row = device::for_bundle(&state.services, &caller, unit).await?;
    // `unit_files=false`: the firmware alone, as hashed in the update command (devices that check the
    // hash fetch env.json and schema.json from their own endpoints).
    let unit_files = match pairs.iter().find(|(k, _)| k == "unit_files") {
        None => true,
        Some((_, v)) => match v.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(Error::Validation(InvalidValue {
                    field: "unit_files",
                    message: "must be true or false".into(),
                }));
            }
        },
    };
    let bundle = bundle::stream(&state.services, &row, format, unit_files).await?;
    let body = Body::from_stream(futures_util::stream::unfold(
        bundle.chunks,
        |mut rx| async move { rx.recv().await.map(|chunk| (chunk.map(Bytes::from), rx)) },
    ));
    let disposition = format!(
        "attachment; filename=\"{}\"",
        bundle
            .file_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            })
            .collect::<String>()
    );
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(bundle.content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response.headers_mut().insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct StateStorageBody {
    state: String,
}

pub async fn set_state_storage(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let caller = caller(&state, &headers).await?;
    let body: StateStorageBody = serde_json::from_slice(&body).map_err(|e| {
        Error::Validation(InvalidValue {
            field: "state",
            message: format!("the body must be {{\"state\": \"<string>\"}}: {e}"),
        })
    })?;
    device::set_state_storage(&state.services, &caller, unit_uuid(&uuid)?, &body.state).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn get_state_storage(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&state, &headers).await?;
    let stored = device::state_storage(&state.services, &caller, unit_uuid(&uuid)?).await?;
    Ok(Json(stored).into_response())
}

/// `GET /world_state`: what a unit cannot know by itself (the seed's `world_state`): the time in UTC.
pub async fn world_state(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    caller(&state, &headers).await?;
    let now = Utc::now();
    Ok(Json(serde_json::json!({
        "utc": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "unix_time": now.timestamp(),
    }))
    .into_response())
}

fn visibility_level(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Public => "Public",
        Visibility::Federated => "Federated",
        Visibility::Internal => "Internal",
        Visibility::Private => "Private",
    }
}

/// A node as the reference server lists it.
#[derive(Serialize)]
struct UnitNodeRead {
    uuid: Uuid,
    r#type: &'static str,
    visibility_level: &'static str,
    is_rewritable_input: bool,
    topic_name: String,
    last_update_datetime: DateTime<Utc>,
    is_data_pipe_active: bool,
    data_pipe_yml: Option<String>,
    data_pipe_status: Option<String>,
    data_pipe_error: Option<String>,
    create_datetime: DateTime<Utc>,
    state: Option<String>,
    unit_uuid: Uuid,
    creator_uuid: Uuid,
}

fn node_read(node: unit_nodes::Model, creator: Uuid) -> UnitNodeRead {
    UnitNodeRead {
        uuid: node.uuid,
        r#type: match nodes::NodeKind::of(&node) {
            nodes::NodeKind::Input => "Input",
            nodes::NodeKind::Output => "Output",
        },
        visibility_level: visibility_level(node.visibility),
        is_rewritable_input: node.is_rewritable_input,
        topic_name: node.topic_name,
        last_update_datetime: node.updated_at,
        is_data_pipe_active: false,
        data_pipe_yml: None,
        data_pipe_status: None,
        data_pipe_error: None,
        create_datetime: node.created_at,
        state: node.last_value,
        unit_uuid: node.unit_uuid,
        creator_uuid: creator,
    }
}

fn page<T>(items: Vec<T>, pairs: &[(String, String)]) -> Result<(u64, Vec<T>)> {
    let limit: usize = number(pairs, "limit", 100)?;
    let offset: usize = number(pairs, "offset", 0)?;
    let count = items.len() as u64;
    Ok((
        count,
        items
            .into_iter()
            .skip(offset)
            .take(limit.min(500))
            .collect(),
    ))
}

/// `GET /unit_nodes?output_uuid=…`: the inputs an output feeds.
pub async fn unit_nodes(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&state, &headers).await?;
    let pairs = pairs(query.as_deref());
    let outputs = uuids(&pairs, "output_uuid")?;
    let [output] = outputs.as_slice() else {
        return Err(Error::Validation(InvalidValue {
            field: "output_uuid",
            message: "give exactly one output uuid".into(),
        }));
    };
    let viewer = caller.viewer();
    let inputs = links::inputs_of_output(&state.services, &viewer, *output).await?;
    let creators: std::collections::HashMap<Uuid, Uuid> = units::Entity::find()
        .filter(units::Column::Uuid.is_in(inputs.iter().map(|n| n.unit_uuid)))
        .all(state.services.db())
        .await?
        .into_iter()
        .map(|u| (u.uuid, u.creator_uuid))
        .collect();
    let (count, inputs) = page(inputs, &pairs)?;
    let unit_nodes: Vec<UnitNodeRead> = inputs
        .into_iter()
        .map(|n| {
            let creator = creators.get(&n.unit_uuid).copied().unwrap_or_default();
            node_read(n, creator)
        })
        .collect();
    Ok(Json(serde_json::json!({ "count": count, "unit_nodes": unit_nodes })).into_response())
}

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// `GET /units?unit_node_uuids=…`: the units owning those nodes, each with only those nodes.
pub async fn units(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let caller = caller(&state, &headers).await?;
    let pairs = pairs(query.as_deref());
    let wanted = uuids(&pairs, "unit_node_uuids")?;
    let found = device::units_of_nodes(&state.services, &caller, &wanted).await?;
    let all_nodes = unit_nodes::Entity::find()
        .filter(unit_nodes::Column::Uuid.is_in(wanted))
        .all(state.services.db())
        .await?;
    let viewer = caller.viewer();
    let (count, found) = page(found, &pairs)?;
    let units: Vec<Value> = found
        .into_iter()
        .map(|unit| {
            let own_nodes: Vec<UnitNodeRead> = all_nodes
                .iter()
                .filter(|n| n.unit_uuid == unit.uuid)
                .cloned()
                .map(|n| node_read(n, unit.creator_uuid))
                .collect();
            let state = (matches!(caller, DeviceCaller::Unit { uuid, .. } if uuid == unit.uuid)
                || data::may_read_private_data(&viewer, &unit))
            .then(|| {
                unit.last_state
                    .as_deref()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
            })
            .flatten();
            serde_json::json!({
                "uuid": unit.uuid,
                "visibility_level": visibility_level(unit.visibility),
                "name": unit.name,
                "create_datetime": unit.created_at,
                "is_auto_update_from_repo_unit": unit.follows_default_branch,
                "target_firmware_platform": Value::Null,
                "repo_branch": unit.repo_branch,
                "repo_commit": unit.repo_commit.clone().or(unit.repo_tag.clone()),
                "unit_state": state,
                "current_commit_version": unit.reported_commit,
                "last_update_datetime": unit.updated_at,
                "creator_uuid": unit.creator_uuid,
                "repo_uuid": unit.repo_unit_uuid,
                "firmware_update_status": unit.update_status,
                "firmware_update_error": Value::Null,
                "last_firmware_update_datetime": unit.update_status_at,
                "unit_nodes": own_nodes,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "count": count, "units": units })).into_response())
}
