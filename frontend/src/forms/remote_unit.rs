//! A unit of another instance: paste its URL or `uuid@domain`, see its outputs with their last values
//! (read from its home instance, nothing followed yet), pick one and an input of one of my units, and
//! link them. Below, the remote units this instance follows, with their links to unlink.

use dioxus::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::fields::{FormError, Modal, SelectField, TextField};
use crate::api::{gql, queries};
use crate::app::{Store, act};
use crate::errors::ApiError;

/// A remote unit as its home instance shows it now.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Preview {
    address: String,
    peer_domain: String,
    name: String,
    outputs: Vec<PreviewOutput>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PreviewOutput {
    name: String,
    last_value: Option<String>,
    last_value_at: Option<String>,
}

#[component]
pub fn RemoteUnitDialog() -> Element {
    let store = use_context::<Store>();
    let address = use_signal(String::new);
    let mut error = use_signal(|| None::<ApiError>);
    let mut preview = use_signal(|| None::<Preview>);
    let output = use_signal(String::new);
    let input = use_signal(String::new);

    let look = move |e: FormEvent| {
        e.prevent_default();
        let value = address();
        spawn(async move {
            match gql(queries::PREVIEW_REMOTE_UNIT, json!({ "address": value })).await {
                Ok(data) => {
                    match serde_json::from_value::<Preview>(data["previewRemoteUnit"].clone()) {
                        Ok(found) => {
                            error.set(None);
                            preview.set(Some(found));
                        }
                        Err(e) => store.say(format!("Unexpected answer: {e}")),
                    }
                }
                Err(e) => {
                    preview.set(None);
                    error.set(Some(e));
                }
            }
        });
    };

    // Inputs of my units, as "unit · input" choices.
    let inputs: Vec<(String, String)> = {
        let graph = store.graph.read();
        let me = store.me.read().clone();
        graph
            .units
            .iter()
            .filter(|u| {
                me.as_ref()
                    .is_some_and(|m| m.uuid == u.creator_uuid || m.role == "ADMIN")
            })
            .flat_map(|u| {
                u.nodes
                    .iter()
                    .filter(|n| n.is_input())
                    .map(|n| (n.uuid.clone(), format!("{} · {}", u.name, n.short_name())))
                    .collect::<Vec<_>>()
            })
            .collect()
    };

    let link = move |e: FormEvent| {
        e.prevent_default();
        let Some(found) = preview() else { return };
        let chosen_output = if output().is_empty() {
            found
                .outputs
                .first()
                .map(|o| o.name.clone())
                .unwrap_or_default()
        } else {
            output()
        };
        let chosen_input = input();
        spawn(async move {
            let variables =
                json!({ "unit": found.address, "output": chosen_output, "input": chosen_input });
            match act(store, queries::LINK_REMOTE_OUTPUT, variables, "Linked").await {
                Ok(_) => store.close(),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let found = preview();
    let input_options: Vec<(String, String)> =
        std::iter::once((String::new(), "Choose an input…".to_owned()))
            .chain(inputs)
            .collect();

    rsx! {
        Modal { title: "Remote unit", wide: true,
            form { id: "remote-unit-preview", onsubmit: look,
                FormError { error, fields: vec!["unit".to_owned(), "output".to_owned(), "inputUuid".to_owned()] }
                TextField {
                    label: "The unit's URL or uuid@domain",
                    name: "unit",
                    value: address,
                    error,
                    focus: true,
                    hint: "3f0c2a9e-…@pu.example",
                }
                div { class: "actions",
                    button { r#type: "submit", "Show outputs" }
                }
            }
            if let Some(found) = found {
                section { id: "remote-unit-outputs",
                    h3 { "{found.name} on {found.peer_domain}" }
                    if found.outputs.is_empty() {
                        p { class: "muted", "This unit shares no outputs." }
                    }
                    table { class: "list",
                        thead { tr { th { "Output" } th { "Last value" } th { "At" } } }
                        tbody {
                            for (name , last , at) in found.outputs.iter().map(|o| (o.name.clone(), o.last_value.clone().unwrap_or_else(|| "—".into()), o.last_value_at.clone().unwrap_or_default())) {
                                tr { "data-output": "{name}",
                                    td { "{name}" }
                                    td { class: "value", "{last}" }
                                    td { class: "muted", "{at}" }
                                }
                            }
                        }
                    }
                    form { id: "remote-unit-link", onsubmit: link,
                        SelectField {
                            label: "Output",
                            name: "output",
                            value: output,
                            options: found.outputs.iter().map(|o| (o.name.clone(), o.name.clone())).collect::<Vec<_>>(),
                            error,
                        }
                        SelectField {
                            label: "Into the input",
                            name: "inputUuid",
                            value: input,
                            options: input_options,
                            error,
                        }
                        div { class: "actions",
                            button { class: "primary", r#type: "submit", "Link" }
                        }
                    }
                }
            }
            FollowedUnits {}
        }
    }
}

/// The remote units this instance follows, with each link to unlink and the follow to end.
#[component]
fn FollowedUnits() -> Element {
    let store = use_context::<Store>();
    let remote = use_resource(move || async move {
        let _ = (store.generation)();
        gql(queries::REMOTE_UNITS, json!({})).await.ok()
    });
    let Some(Some(data)) = remote.read().clone() else {
        return rsx! {};
    };
    let units = data["remoteUnits"].as_array().cloned().unwrap_or_default();
    if units.is_empty() {
        return rsx! {};
    }
    let graph = store.graph.read().clone();
    let run = move |query: &'static str, uuid: String, done: &'static str| {
        move |_| {
            let uuid = uuid.clone();
            spawn(async move {
                let _ = act(store, query, json!({ "uuid": uuid }), done).await;
            });
        }
    };
    rsx! {
        h3 { "Followed remote units" }
        ul { class: "list", id: "followed-remote-units",
            for unit in units {
                {
                    let uuid = unit["uuid"].as_str().unwrap_or_default().to_owned();
                    let title = unit["name"].as_str().unwrap_or(unit["address"].as_str().unwrap_or_default()).to_owned();
                    let domain = unit["peerDomain"].as_str().unwrap_or_default().to_owned();
                    let status = unit["status"].as_str().unwrap_or_default().to_owned();
                    let links = unit["links"].as_array().cloned().unwrap_or_default();
                    rsx! {
                        li { key: "{uuid}",
                            strong { "{title}" } " @ {domain} — {status}"
                            button { onclick: run(queries::UNFOLLOW_REMOTE_UNIT, uuid.clone(), "Remote unit unfollowed"), "Unfollow" }
                            ul {
                                for l in links {
                                    {
                                        let link = l["uuid"].as_str().unwrap_or_default().to_owned();
                                        let into = graph
                                            .variable_label(l["inputUuid"].as_str().unwrap_or_default())
                                            .unwrap_or_else(|| "?".into());
                                        let name = l["outputName"].as_str().unwrap_or_default().to_owned();
                                        rsx! {
                                            li { key: "{link}",
                                                "{name} → {into} "
                                                button { onclick: run(queries::UNLINK_REMOTE_OUTPUT, link.clone(), "Unlinked"), "Unlink" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
