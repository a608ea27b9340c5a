//! A unit at a glance: presence, update status and history, state, logs; and what can be done to it
//! (edit, env.json, bundle download, update, log sync, reset, delete), and its Grafana dashboard.

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::alert_rules::{AlertRules, Watched};
use super::fields::Modal;
use crate::api::{gql, queries};
use crate::app::{Dialog, Store, act};

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| "—".into())
}

/// Opens a bundle download link the API signs for five minutes.
async fn download(store: Store, uuid: String, format: &'static str) {
    match gql(
        queries::BUNDLE_URL,
        json!({ "uuid": uuid, "format": format }),
    )
    .await
    {
        Ok(data) => {
            if let (Some(url), Some(window)) =
                (data["unit"]["bundleUrl"].as_str(), web_sys::window())
            {
                let _ = window.location().assign(url);
            }
        }
        Err(e) => store.say(e.message),
    }
}

#[component]
pub fn UnitPanel(uuid: String) -> Element {
    let store = use_context::<Store>();
    let Some(unit) = store.graph.read().unit(&uuid).cloned() else {
        return rsx! { Modal { title: "Unit", p { "This unit is gone." } } };
    };
    let mine = store
        .me
        .read()
        .as_ref()
        .is_some_and(|m| m.uuid == unit.creator_uuid || m.role == "ADMIN");
    let mut confirm_delete = use_signal(|| false);
    // Read again whenever the graph reloads (after an action or a new state).
    let details = use_resource({
        let uuid = uuid.clone();
        move || {
            let _ = (store.generation)();
            let uuid = uuid.clone();
            async move {
                gql(queries::UNIT_DETAILS, json!({ "uuid": uuid }))
                    .await
                    .ok()
            }
        }
    });
    let data = details
        .read()
        .clone()
        .flatten()
        .map(|d| d["unit"].clone())
        .unwrap_or(Value::Null);
    let state = match &data["state"] {
        Value::Null => "no state reported yet".to_string(),
        state => serde_json::to_string_pretty(state).unwrap_or_default(),
    };
    let attempts = data["updateAttempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The dashboard as a file to save, without another request.
    let dashboard = match &data["grafanaDashboard"] {
        Value::Null => None,
        board => Some(format!(
            "data:application/json;charset=utf-8,{}",
            String::from(js_sys::encode_uri_component(&board.to_string()))
        )),
    };
    let logs = data["logs"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    let command = move |query: &'static str, done: &'static str| {
        let uuid = uuid.clone();
        move |_| {
            let uuid = uuid.clone();
            spawn(async move {
                let _ = act(store, query, json!({ "uuid": uuid }), done).await;
            });
        }
    };
    let delete = {
        let uuid = unit.uuid.clone();
        move |_| {
            if !confirm_delete() {
                confirm_delete.set(true);
                return;
            }
            let uuid = uuid.clone();
            spawn(async move {
                if act(
                    store,
                    queries::DELETE_UNIT,
                    json!({ "uuid": uuid }),
                    "Unit deleted",
                )
                .await
                .is_ok()
                {
                    store.close();
                }
            });
        }
    };
    let presence = if unit.online { "online" } else { "offline" };
    let version = if unit.follows_default_branch {
        "follows the default branch".to_string()
    } else {
        format!(
            "pinned to {} {}",
            unit.branch.clone().unwrap_or_default(),
            unit.commit.clone().unwrap_or_default()
        )
    };
    let id = unit.uuid.clone();

    rsx! {
        Modal { title: "Unit {unit.name}", wide: true,
            dl { class: "facts",
                dt { "Presence" }
                dd { class: "presence-{presence}", "{presence}" }
                dt { "Version" }
                dd { "{version}" }
                dt { "Update" }
                dd { "{text(&data[\"updateStatus\"])} · target {text(&data[\"targetCommit\"])} · running {text(&data[\"reportedCommit\"])}" }
            }
            if mine {
                div { class: "actions wrap",
                    button { onclick: { let id = id.clone(); move |_| store.open(Dialog::EditUnit(id.clone())) }, "Edit / update version" }
                    button { id: "edit-env", onclick: { let id = id.clone(); move |_| store.open(Dialog::UnitEnv(id.clone())) }, "env.json" }
                    button { onclick: command(queries::REQUEST_LOG_SYNC, "Log sync requested"), "Sync logs" }
                    button { onclick: command(queries::RESET_UNIT, "Reset requested"), "Reset" }
                    button {
                        onclick: command(queries::REGENERATE_TOKEN, "New token issued: download the bundle again"),
                        "New token"
                    }
                    button { class: "danger", onclick: delete,
                        if confirm_delete() { "Really delete?" } else { "Delete" }
                    }
                }
                div { class: "actions wrap", role: "group", "aria-label": "Download bundle",
                    span { "Bundle:" }
                    for (format , label) in [("ZIP", "zip"), ("TAR", "tar"), ("TAR_GZ", "tgz")] {
                        button {
                            onclick: {
                                let id = id.clone();
                                move |_| {
                                    spawn(download(store, id.clone(), format));
                                }
                            },
                            "{label}"
                        }
                    }
                }
            }
            h3 { "Variables" }
            ul { class: "chips",
                for node in unit.nodes.clone() {
                    li {
                        button {
                            class: if node.is_input() { "chip input" } else { "chip output" },
                            onclick: move |_| store.open(Dialog::Variable(node.uuid.clone())),
                            "{node.short_name()} = {node.last_value.clone().unwrap_or_else(|| \"—\".into())}"
                        }
                    }
                }
            }
            if let Some(href) = dashboard {
                p {
                    a { id: "grafana-dashboard", download: "pepeunit-{unit.name}.json", href: "{href}",
                        "Download the Grafana dashboard"
                    }
                    span { class: "muted", " (a panel per output, for the Infinity data source)" }
                }
            }
            AlertRules { watched: Watched::Unit(unit.uuid.clone()) }
            if mine {
                super::federation::UnitBlocks { unit: id.clone() }
                h3 { "Update history" }
                if attempts.is_empty() {
                    p { class: "muted", "No updates yet." }
                }
                ul { class: "list",
                    for a in attempts {
                        li { "{text(&a[\"startedAt\"])} → {text(&a[\"targetCommit\"])}: {text(&a[\"status\"])}" }
                    }
                }
                h3 { "State" }
                pre { class: "state", "{state}" }
                h3 { "Logs" }
                if logs.is_empty() {
                    p { class: "muted", "No log lines." }
                }
                ul { class: "list logs",
                    for line in logs {
                        li { class: "log-{text(&line[\"level\"])}", "{text(&line[\"createdAt\"])} {text(&line[\"level\"])}: {text(&line[\"text\"])}" }
                    }
                }
            }
        }
    }
}
