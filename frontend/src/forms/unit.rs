//! Create a unit from a repo_unit, or edit one: name, visibility and which version it runs (follow the
//! default branch, or pin a branch and commit picked from the mirror).

use dioxus::prelude::*;
use serde_json::json;

use super::fields::{CheckField, FormError, Modal, SelectField, TextField, names, visibilities};
use super::repo_unit::{commit_options, ref_names};
use crate::api::{gql, queries};
use crate::app::{Dialog, Store, act};

const FIELDS: [&str; 7] = [
    "name",
    "visibility",
    "followsDefaultBranch",
    "branch",
    "commit",
    "tag",
    "env",
];

#[component]
pub fn UnitForm(repo: String, unit: Option<String>) -> Element {
    let store = use_context::<Store>();
    let existing = unit
        .as_ref()
        .and_then(|u| store.graph.read().unit(u).cloned());
    let repo_name = store
        .graph
        .read()
        .repo_unit(&repo)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| "a repository".into());
    let name = use_signal(|| {
        existing
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default()
    });
    let visibility = use_signal(|| {
        existing
            .as_ref()
            .map_or("PUBLIC".into(), |u| u.visibility.clone())
    });
    let follows = use_signal(|| existing.as_ref().is_none_or(|u| u.follows_default_branch));
    let branch = use_signal(|| {
        existing
            .as_ref()
            .and_then(|u| u.branch.clone())
            .unwrap_or_default()
    });
    let commit = use_signal(|| {
        existing
            .as_ref()
            .and_then(|u| u.commit.clone())
            .unwrap_or_default()
    });
    let mut error = use_signal(|| None);
    let mut busy = use_signal(|| false);

    let refs = use_resource({
        let repo = repo.clone();
        move || {
            let repo = repo.clone();
            async move {
                gql(queries::REPO_UNIT_REFS, json!({ "uuid": repo }))
                    .await
                    .ok()
            }
        }
    });
    let branches = refs
        .read()
        .clone()
        .flatten()
        .map(|d| ref_names(&d["repoUnit"]["branches"]))
        .unwrap_or_default();
    let commits = use_resource({
        let repo = repo.clone();
        move || {
            let repo = repo.clone();
            let revision = branch();
            async move {
                if revision.is_empty() {
                    return None;
                }
                gql(
                    queries::COMMITS,
                    json!({ "uuid": repo, "revision": revision }),
                )
                .await
                .ok()
            }
        }
    });
    let commit_options = commits
        .read()
        .as_ref()
        .and_then(Option::as_ref)
        .map(commit_options)
        .unwrap_or_default();
    // The picker shows the branch's newest commit first; it is the one meant until another is picked.
    let newest = commit_options
        .first()
        .map(|(id, _)| id.clone())
        .unwrap_or_default();

    let submit = {
        let repo = repo.clone();
        let unit = unit.clone();
        move |e: FormEvent| {
            e.prevent_default();
            let mut input = json!({ "name": name(), "visibility": visibility(), "followsDefaultBranch": follows() });
            if !follows() {
                input["branch"] = json!(branch());
                let picked = commit();
                input["commit"] = json!(if picked.is_empty() {
                    newest.clone()
                } else {
                    picked
                });
            }
            busy.set(true);
            let repo = repo.clone();
            let unit = unit.clone();
            spawn(async move {
                let result = match &unit {
                    None => {
                        input["repoUnitUuid"] = json!(repo);
                        act(
                            store,
                            queries::CREATE_UNIT,
                            json!({ "input": input }),
                            "Unit created",
                        )
                        .await
                    }
                    Some(uuid) => {
                        act(
                            store,
                            queries::UPDATE_UNIT,
                            json!({ "uuid": uuid, "input": input }),
                            "Unit saved",
                        )
                        .await
                    }
                };
                match result {
                    Ok(data) => {
                        let created = data["createUnit"]["uuid"].as_str().map(str::to_owned);
                        match created.or(unit) {
                            Some(uuid) => store.open(Dialog::Unit(uuid)),
                            None => store.close(),
                        }
                    }
                    Err(e) => error.set(Some(e)),
                }
                busy.set(false);
            });
        }
    };

    let title = if unit.is_some() {
        "Edit unit".to_string()
    } else {
        format!("New unit of {repo_name}")
    };
    rsx! {
        Modal { title,
            form { id: "unit-form", onsubmit: submit,
                FormError { error, fields: names(&FIELDS) }
                TextField { label: "Name", name: "name", value: name, error, focus: true }
                SelectField { label: "Who sees it", name: "visibility", value: visibility, options: visibilities(), error }
                CheckField { label: "Follow the default branch (update as it moves)", name: "followsDefaultBranch", value: follows }
                if !follows() {
                    SelectField {
                        label: "Branch",
                        name: "branch",
                        value: branch,
                        options: [(String::new(), "— pick a branch —".to_string())].into_iter().chain(branches).collect::<Vec<_>>(),
                        error,
                    }
                    if !commit_options.is_empty() {
                        SelectField { label: "Commit", name: "commit", value: commit, options: commit_options, error }
                    }
                }
                div { class: "actions",
                    button { class: "primary", r#type: "submit", disabled: busy(),
                        if unit.is_some() { "Save" } else { "Create unit" }
                    }
                    button { r#type: "button", onclick: move |_| store.close(), "Cancel" }
                }
            }
        }
    }
}
