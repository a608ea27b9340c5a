//! Start a fleet rollout of a repo_unit: a commit of its default branch, how many units a wave moves,
//! the failure share that halts it and how long a wave may take; and the list of its rollouts.

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::fields::{FormError, Modal, SelectField, TextField, names};
use super::repo_unit::commit_options;
use crate::api::{gql, queries};
use crate::app::{Dialog, Store, act};
use crate::errors::ApiError;

const FIELDS: [&str; 4] = [
    "commit",
    "batchSize",
    "maxFailureRatio",
    "waveTimeoutSeconds",
];

/// `text` as a number for `field`, or the error to show beside it.
fn number<T: std::str::FromStr>(text: &str, field: &str) -> Result<T, ApiError> {
    text.trim().parse().map_err(|_| ApiError {
        message: "must be a number".into(),
        code: "VALIDATION".into(),
        field: Some(field.into()),
    })
}

#[component]
pub fn RolloutForm(repo: String) -> Element {
    let store = use_context::<Store>();
    let (repo_name, branch) = store
        .graph
        .read()
        .repo_unit(&repo)
        .map(|r| (r.name.clone(), r.default_branch.clone().unwrap_or_default()))
        .unwrap_or_default();
    let commit = use_signal(String::new);
    let batch = use_signal(|| "10".to_string());
    let ratio = use_signal(|| "0.2".to_string());
    let timeout = use_signal(|| "600".to_string());
    let mut error = use_signal(|| None);
    let mut busy = use_signal(|| false);

    let commits = use_resource({
        let repo = repo.clone();
        let branch = branch.clone();
        move || {
            let repo = repo.clone();
            let revision = branch.clone();
            async move {
                gql(
                    queries::COMMITS,
                    json!({ "uuid": repo, "revision": revision }),
                )
                .await
                .ok()
            }
        }
    });
    let loading = commits.read().is_none();
    let options = commits
        .read()
        .as_ref()
        .and_then(Option::as_ref)
        .map(commit_options)
        .unwrap_or_default();
    // The newest commit comes first; it is the one meant until another is picked.
    let newest = options
        .first()
        .map(|(id, _)| id.clone())
        .unwrap_or_default();

    let loaded = !newest.is_empty();
    let submit = {
        let repo = repo.clone();
        move |e: FormEvent| {
            e.prevent_default();
            let numbers = (|| {
                Ok::<_, ApiError>((
                    number::<i64>(&batch(), "batchSize")?,
                    number::<f64>(&ratio(), "maxFailureRatio")?,
                    number::<i64>(&timeout(), "waveTimeoutSeconds")?,
                ))
            })();
            let (batch_size, max_failure_ratio, wave_timeout) = match numbers {
                Ok(n) => n,
                Err(e) => {
                    error.set(Some(e));
                    return;
                }
            };
            let picked = commit();
            let input = json!({
                "repoUnitUuid": repo,
                "commit": if picked.is_empty() { newest.clone() } else { picked },
                "batchSize": batch_size,
                "maxFailureRatio": max_failure_ratio,
                "waveTimeoutSeconds": wave_timeout,
            });
            busy.set(true);
            let repo = repo.clone();
            spawn(async move {
                match act(
                    store,
                    queries::START_ROLLOUT,
                    json!({ "input": input }),
                    "Rollout started",
                )
                .await
                {
                    Ok(_) => store.open(Dialog::RepoUnit(repo)),
                    Err(e) => error.set(Some(e)),
                }
                busy.set(false);
            });
        }
    };

    rsx! {
        Modal { title: "Roll out {repo_name}",
            form { id: "rollout-form", onsubmit: submit,
                FormError { error, fields: names(&FIELDS) }
                p { class: "muted", "Moves the units of this repository to a commit of {branch}, in waves." }
                if loading {
                    p { class: "muted", "Loading commits…" }
                } else if options.is_empty() {
                    p { class: "form-error", role: "alert", "No commits found on {branch}." }
                } else {
                    SelectField { label: "Commit", name: "commit", value: commit, options, error }
                }
                TextField { label: "Units per wave", name: "batchSize", value: batch, error, kind: "number", focus: true }
                TextField { label: "Halt when this share of a wave fails (0 to 1)", name: "maxFailureRatio", value: ratio, error }
                TextField { label: "Wave timeout, seconds", name: "waveTimeoutSeconds", value: timeout, error, kind: "number" }
                div { class: "actions",
                    button { class: "primary", r#type: "submit", disabled: busy() || !loaded, "Start rollout" }
                    button { r#type: "button", onclick: move |_| store.close(), "Cancel" }
                }
            }
        }
    }
}

/// A repo_unit's rollouts, newest first, for its panel.
#[component]
pub fn RolloutList(repo: String) -> Element {
    let rollouts = use_resource(move || {
        let repo = repo.clone();
        async move { gql(queries::ROLLOUTS, json!({ "uuid": repo })).await.ok() }
    });
    let items = rollouts
        .read()
        .as_ref()
        .and_then(Option::as_ref)
        .and_then(|d| d["rollouts"].as_array().cloned())
        .unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let short = |v: &Value| {
        v.as_str()
            .unwrap_or_default()
            .chars()
            .take(8)
            .collect::<String>()
    };
    rsx! {
        if !items.is_empty() {
            h3 { "Rollouts" }
            ul { class: "list", id: "rollouts",
                for r in items {
                    li { key: "{text(&r[\"uuid\"])}",
                        "{text(&r[\"createdAt\"])} → {short(&r[\"targetCommit\"])}: {text(&r[\"status\"])}, wave {r[\"wave\"]}"
                        if let Some(detail) = r["detail"].as_str() {
                            " ({detail})"
                        }
                    }
                }
            }
        }
    }
}
