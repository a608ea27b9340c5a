//! A firmware repository: create it from a clone URL, see and edit it, sync it, delete it, and start a
//! unit from it.

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::alert_rules::{AlertRules, Watched};
use super::fields::{CheckField, FormError, Modal, SelectField, TextField, names, visibilities};
use super::rollout::RolloutList;
use crate::api::{gql, queries};
use crate::app::{Dialog, Store, act, act_in_form};

const FIELDS: [&str; 7] = [
    "name",
    "cloneUrl",
    "visibility",
    "credentials",
    "defaultBranch",
    "syncPeriodSeconds",
    "autoSync",
];

/// The sync period as the API wants it: seconds, or absent for the default.
fn period(text: &str) -> Result<Option<i64>, crate::errors::ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>()
        .map(Some)
        .map_err(|_| crate::errors::ApiError {
            message: "must be a whole number of seconds".into(),
            code: "VALIDATION".into(),
            field: Some("syncPeriodSeconds".into()),
        })
}

#[component]
pub fn CreateRepoUnit() -> Element {
    let store = use_context::<Store>();
    let name = use_signal(String::new);
    let url = use_signal(String::new);
    let private = use_signal(|| false);
    let username = use_signal(String::new);
    let password = use_signal(String::new);
    let visibility = use_signal(|| "PUBLIC".to_string());
    let sync = use_signal(String::new);
    let auto_sync = use_signal(|| true);
    let mut error = use_signal(|| None);
    let mut busy = use_signal(|| false);

    let submit = move |e: FormEvent| {
        e.prevent_default();
        let sync_period = match period(&sync()) {
            Ok(p) => p,
            Err(e) => {
                error.set(Some(e));
                return;
            }
        };
        let mut input = json!({
            "name": name(), "cloneUrl": url(), "visibility": visibility(),
            "isPrivateRepository": private(), "autoSync": auto_sync(),
        });
        if let Some(p) = sync_period {
            input["syncPeriodSeconds"] = json!(p);
        }
        if private() {
            input["credentials"] = json!({ "username": username(), "password": password() });
        }
        busy.set(true);
        spawn(async move {
            // Cloning can take a while: the answer comes once the mirror is complete.
            match gql(queries::CREATE_REPO_UNIT, json!({ "input": input })).await {
                Ok(data) => {
                    store.say("Repository mirrored");
                    store.reload();
                    match data["createRepoUnit"]["uuid"].as_str() {
                        Some(uuid) => store.open(Dialog::RepoUnit(uuid.to_owned())),
                        None => store.close(),
                    }
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };

    rsx! {
        Modal { title: "New firmware repository",
            form { id: "repo-unit-form", onsubmit: submit,
                FormError { error, fields: names(&FIELDS) }
                TextField { label: "Name", name: "name", value: name, error, focus: true }
                TextField { label: "Git clone URL", name: "cloneUrl", value: url, error, hint: "https://git.example.com/firmware.git" }
                CheckField { label: "Private repository (needs credentials)", name: "isPrivateRepository", value: private }
                if private() {
                    TextField { label: "Username", name: "credentials", value: username, error }
                    TextField { label: "Password or access token", name: "credentialsPassword", value: password, error, kind: "password", autocomplete: "new-password" }
                }
                SelectField { label: "Who sees it", name: "visibility", value: visibility, options: visibilities(), error }
                TextField { label: "Sync period, seconds (empty: one day)", name: "syncPeriodSeconds", value: sync, error, kind: "number" }
                CheckField { label: "Sync automatically", name: "autoSync", value: auto_sync }
                div { class: "actions",
                    button { class: "primary", r#type: "submit", disabled: busy(),
                        if busy() { "Cloning…" } else { "Create" }
                    }
                    button { r#type: "button", onclick: move |_| store.close(), "Cancel" }
                }
            }
        }
    }
}

#[component]
pub fn RepoUnitPanel(uuid: String) -> Element {
    let store = use_context::<Store>();
    let Some(repo) = store.graph.read().repo_unit(&uuid).cloned() else {
        return rsx! { Modal { title: "Repository", p { "This repository is gone." } } };
    };
    let mine = store
        .me
        .read()
        .as_ref()
        .is_some_and(|m| m.uuid == repo.creator_uuid || m.role == "ADMIN");
    let name = use_signal(|| repo.name.clone());
    let visibility = use_signal(|| repo.visibility.clone());
    let branch = use_signal(|| repo.default_branch.clone().unwrap_or_default());
    let sync = use_signal(|| repo.sync_period_seconds.to_string());
    let auto_sync = use_signal(|| repo.auto_sync);
    let new_credentials = use_signal(|| false);
    let username = use_signal(String::new);
    let password = use_signal(String::new);
    let mut error = use_signal(|| None);
    let mut confirm_delete = use_signal(|| false);
    let refs = use_resource({
        let uuid = uuid.clone();
        move || {
            let uuid = uuid.clone();
            async move {
                gql(queries::REPO_UNIT_REFS, json!({ "uuid": uuid }))
                    .await
                    .ok()
            }
        }
    });
    let branches: Vec<(String, String)> = refs
        .read()
        .clone()
        .flatten()
        .and_then(|d| d["repoUnit"]["branches"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b["name"].as_str().map(|n| (n.to_owned(), n.to_owned())))
        .collect();
    let webhook = refs
        .read()
        .clone()
        .flatten()
        .and_then(|d| d["repoUnit"]["webhookPath"].as_str().map(str::to_owned));

    let save = {
        let uuid = uuid.clone();
        move |e: FormEvent| {
            e.prevent_default();
            let sync_period = match period(&sync()) {
                Ok(p) => p,
                Err(e) => {
                    error.set(Some(e));
                    return;
                }
            };
            let mut input =
                json!({ "name": name(), "visibility": visibility(), "autoSync": auto_sync() });
            if let Some(p) = sync_period {
                input["syncPeriodSeconds"] = json!(p);
            }
            if !branch().is_empty() {
                input["defaultBranch"] = json!(branch());
            }
            if new_credentials() {
                input["credentials"] = json!({ "username": username(), "password": password() });
            }
            act_in_form(
                store,
                error,
                queries::UPDATE_REPO_UNIT,
                json!({ "uuid": uuid, "input": input }),
                "Saved",
            );
        }
    };
    let sync_now = {
        let uuid = uuid.clone();
        move |_| {
            let uuid = uuid.clone();
            spawn(async move {
                let _ = act(
                    store,
                    queries::SYNC_REPO_UNIT,
                    json!({ "uuid": uuid }),
                    "Synced",
                )
                .await;
            });
        }
    };
    let delete = {
        let uuid = uuid.clone();
        move |_| {
            if !confirm_delete() {
                confirm_delete.set(true);
                return;
            }
            let uuid = uuid.clone();
            spawn(async move {
                match act(
                    store,
                    queries::DELETE_REPO_UNIT,
                    json!({ "uuid": uuid }),
                    "Repository deleted",
                )
                .await
                {
                    Ok(_) => store.close(),
                    Err(e) => error.set(Some(e)),
                }
            });
        }
    };
    let new_unit = {
        let uuid = uuid.clone();
        move |_| store.open(Dialog::CreateUnit(uuid.clone()))
    };
    let rollout = {
        let uuid = uuid.clone();
        move |_| store.open(Dialog::StartRollout(uuid.clone()))
    };
    let synced = repo
        .last_synced_at
        .clone()
        .unwrap_or_else(|| "never".into());

    rsx! {
        Modal { title: "Repository {repo.name}",
            dl { class: "facts",
                dt { "Clone URL" }
                dd { "{repo.clone_url}" }
                dt { "Last sync" }
                dd { "{synced}" }
                if let Some(problem) = &repo.last_sync_error {
                    dt { "Sync error" }
                    dd { class: "field-error", "{problem}" }
                }
                if let Some(path) = webhook {
                    dt { "Push webhook" }
                    dd { code { "{path}" } }
                }
            }
            div { class: "actions",
                button { id: "create-unit", class: "primary", onclick: new_unit, "+ Unit from this repository" }
                // Anyone may roll out their own units of it; an admin moves all of them.
                button { id: "start-rollout", onclick: rollout, "Roll out…" }
                if mine {
                    button { onclick: sync_now, "Sync now" }
                }
            }
            RolloutList { repo: uuid.clone() }
            AlertRules { watched: Watched::RepoUnit(uuid.clone()) }
            if mine {
                form { id: "repo-unit-edit", onsubmit: save,
                    FormError { error, fields: names(&FIELDS) }
                    TextField { label: "Name", name: "name", value: name, error }
                    SelectField { label: "Who sees it", name: "visibility", value: visibility, options: visibilities(), error }
                    if !branches.is_empty() {
                        SelectField { label: "Default branch", name: "defaultBranch", value: branch, options: branches, error }
                    }
                    TextField { label: "Sync period, seconds", name: "syncPeriodSeconds", value: sync, error, kind: "number" }
                    CheckField { label: "Sync automatically", name: "autoSync", value: auto_sync }
                    if repo.is_private_repository {
                        CheckField { label: "New credentials", name: "newCredentials", value: new_credentials }
                        if new_credentials() {
                            TextField { label: "Username", name: "credentials", value: username, error }
                            TextField { label: "Password or access token", name: "credentialsPassword", value: password, error, kind: "password", autocomplete: "new-password" }
                        }
                    }
                    div { class: "actions",
                        button { class: "primary", r#type: "submit", "Save" }
                        button { r#type: "button", class: "danger", onclick: delete,
                            if confirm_delete() { "Really delete?" } else { "Delete" }
                        }
                    }
                }
            }
        }
    }
}

/// The names of a JSON array of refs.
pub fn ref_names(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["name"].as_str().map(|n| (n.to_owned(), n.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The commits of a `COMMITS` answer as picker options: id, and short id with the summary.
pub fn commit_options(data: &Value) -> Vec<(String, String)> {
    data["repoUnit"]["commits"]
        .as_array()
        .map(|commits| {
            commits
                .iter()
                .filter_map(|c| {
                    let id = c["id"].as_str()?;
                    let summary = c["summary"].as_str().unwrap_or_default();
                    Some((
                        id.to_owned(),
                        format!("{} {summary}", &id[..id.len().min(8)]),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}
