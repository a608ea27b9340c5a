//! Federation for admins: the mode, this instance's actor URL, the peers (pending, accepted, blocked)
//! with what can be done to each, asking another instance to peer, blocking one, and which remote
//! instances follow which units. Also the per-unit block list that the unit panel shows to the unit's
//! creator and admins ([`UnitBlocks`]).

use dioxus::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::fields::{FormError, Modal, TextField};
use crate::api::{gql, queries};
use crate::app::{Store, act};
use crate::errors::ApiError;

/// Another instance as the admin sees it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Peer {
    domain: String,
    status: String,
    requested_here: bool,
}

/// A remote instance following a unit of this one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Follower {
    unit_uuid: String,
    peer_domain: String,
}

/// What a peer's status means to the admin.
fn status_label(peer: &Peer) -> &'static str {
    match peer.status.as_str() {
        "pending" => "asks to peer: waiting for your answer",
        "requested" => "asked by this instance: waiting for their answer",
        "accepted" => "peer",
        "rejected" => "refused this instance's request",
        "blocked" => "blocked",
        _ => "unknown",
    }
}

#[component]
pub fn FederationPanel() -> Element {
    let store = use_context::<Store>();
    let answer = use_resource(move || async move {
        let _ = (store.generation)();
        gql(queries::FEDERATION, json!({})).await
    });
    let body = match answer.read().clone() {
        None => rsx! { p { class: "muted", "Loading…" } },
        Some(Err(error)) => rsx! { p { class: "form-error", role: "alert", "{error.message}" } },
        Some(Ok(data)) => {
            let on = data["instanceSettings"]["federationEnabled"]
                .as_bool()
                .unwrap_or_default();
            let actor = data["federationActorUrl"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let peers: Vec<Peer> =
                serde_json::from_value(data["federationPeers"].clone()).unwrap_or_default();
            let followers: Vec<Follower> =
                serde_json::from_value(data["federationFollowers"].clone()).unwrap_or_default();
            let graph = store.graph.read();
            let followers: Vec<(String, String)> = followers
                .into_iter()
                .map(|f| {
                    let unit = graph
                        .unit(&f.unit_uuid)
                        .map_or_else(|| f.unit_uuid.clone(), |u| u.name.clone());
                    (unit, f.peer_domain)
                })
                .collect();
            drop(graph);
            let mode = if on {
                "On: trusted peers only"
            } else {
                "Off: no federation route answers and nothing is sent"
            };
            rsx! {
                dl { class: "facts",
                    dt { "Mode" }
                    dd { id: "federation-mode", "{mode}" }
                    dt { "This instance's actor" }
                    dd { id: "federation-actor", code { "{actor}" } }
                }
                if !on {
                    p { class: "muted", "Switch federation on in the Admin panel's instance settings." }
                }
                InstanceForm {}
                h3 { "Instances" }
                if peers.is_empty() {
                    p { class: "muted", "No peers, requests or blocks." }
                }
                ul { class: "list", id: "federation-peers",
                    for peer in peers {
                        PeerRow { key: "{peer.domain}", peer }
                    }
                }
                h3 { "Who follows which unit" }
                if followers.is_empty() {
                    p { class: "muted", "No remote instance follows a unit of this instance." }
                }
                ul { class: "list", id: "federation-followers",
                    for (unit , domain) in followers {
                        li { strong { "{domain}" } " follows " strong { "{unit}" } }
                    }
                }
            }
        }
    };
    rsx! {
        Modal { title: "Federation", wide: true, {body} }
    }
}

/// One peer with the actions its status allows.
#[component]
fn PeerRow(peer: Peer) -> Element {
    let store = use_context::<Store>();
    let domain = peer.domain.clone();
    let run = move |query: &'static str, variables: serde_json::Value, done: &'static str| {
        move |_| {
            let variables = variables.clone();
            spawn(async move {
                let _ = act(store, query, variables, done).await;
            });
        }
    };
    let by_domain = json!({ "domain": domain });
    let by_address = json!({ "address": domain });
    let end_label = if peer.requested_here && peer.status == "requested" {
        "Withdraw"
    } else {
        "End peering"
    };
    let answer = match peer.status.as_str() {
        "pending" => rsx! {
            button { class: "primary", onclick: run(queries::ACCEPT_PEERING, by_domain.clone(), "Peering accepted"), "Accept" }
            button { onclick: run(queries::REJECT_PEERING, by_domain.clone(), "Peering refused"), "Reject" }
        },
        "blocked" => rsx! {
            button { onclick: run(queries::UNBLOCK_INSTANCE, by_domain.clone(), "Instance unblocked"), "Unblock" }
        },
        _ => rsx! {
            button { onclick: run(queries::END_PEERING, by_domain.clone(), "Peering ended"), "{end_label}" }
        },
    };
    rsx! {
        li { class: "peer peer-{peer.status}", "data-domain": "{peer.domain}",
            strong { "{peer.domain}" }
            " — "
            span { class: "peer-status", "{status_label(&peer)}" }
            span { class: "actions inline",
                {answer}
                if peer.status != "blocked" {
                    button { class: "danger", onclick: run(queries::BLOCK_INSTANCE, by_address, "Instance blocked"), "Block" }
                }
            }
        }
    }
}

/// One instance's address (domain or URL) and what to do with it: ask it to peer (Enter) or block it.
#[component]
fn InstanceForm() -> Element {
    let store = use_context::<Store>();
    let mut address = use_signal(String::new);
    let mut error = use_signal(|| None::<ApiError>);
    let send = move |query: &'static str, done: &'static str| {
        let value = address();
        spawn(async move {
            match act(store, query, json!({ "address": value }), done).await {
                Ok(_) => {
                    error.set(None);
                    address.set(String::new());
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    rsx! {
        form {
            id: "instance-form",
            onsubmit: move |e: FormEvent| {
                e.prevent_default();
                send(queries::REQUEST_PEERING, "Peering requested");
            },
            FormError { error, fields: vec!["address".to_owned()] }
            TextField { label: "Another instance (domain or URL)", name: "address", value: address, error, hint: "pu.example" }
            div { class: "actions",
                button { id: "request-peering", class: "primary", r#type: "submit", "Ask to peer" }
                button {
                    id: "block-instance",
                    class: "danger",
                    r#type: "button",
                    onclick: move |_| send(queries::BLOCK_INSTANCE, "Instance blocked"),
                    "Block"
                }
            }
        }
    }
}

/// The instances blocked from one unit, with unblock, and a form to block one (the unit's creator and
/// admins; nothing shows for others).
#[component]
pub fn UnitBlocks(unit: String) -> Element {
    let store = use_context::<Store>();
    let blocks = use_resource({
        let unit = unit.clone();
        move || {
            let _ = (store.generation)();
            let unit = unit.clone();
            async move { gql(queries::UNIT_BLOCKS, json!({ "unit": unit })).await }
        }
    });
    let mut address = use_signal(String::new);
    let mut error = use_signal(|| None::<ApiError>);
    let Some(Ok(data)) = blocks.read().clone() else {
        return rsx! {};
    };
    let domains: Vec<String> = data["unitBlockedInstances"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["domain"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let submit = {
        let unit = unit.clone();
        move |e: FormEvent| {
            e.prevent_default();
            let variables = json!({ "unit": unit, "address": address() });
            spawn(async move {
                match act(
                    store,
                    queries::BLOCK_FOR_UNIT,
                    variables,
                    "Instance blocked from this unit",
                )
                .await
                {
                    Ok(_) => {
                        error.set(None);
                        address.set(String::new());
                    }
                    Err(e) => error.set(Some(e)),
                }
            });
        }
    };
    rsx! {
        section { id: "unit-blocks",
            h3 { "Blocked instances" }
            if domains.is_empty() {
                p { class: "muted", "Every peer may follow this unit (as its visibility allows)." }
            }
            ul { class: "list",
                for domain in domains {
                    li { "data-domain": "{domain}",
                        "{domain} "
                        button {
                            onclick: {
                                let variables = json!({ "unit": unit, "domain": domain });
                                move |_| {
                                    let variables = variables.clone();
                                    spawn(async move {
                                        let _ = act(store, queries::UNBLOCK_FOR_UNIT, variables, "Instance unblocked").await;
                                    });
                                }
                            },
                            "Unblock"
                        }
                    }
                }
            }
            form { id: "block-for-unit", class: "inline-form", onsubmit: submit,
                FormError { error, fields: vec!["address".to_owned()] }
                TextField { label: "Block an instance from this unit", name: "address", value: address, error, hint: "pu.example" }
                div { class: "actions",
                    button { class: "danger", r#type: "submit", "Block from this unit" }
                }
            }
        }
    }
}
