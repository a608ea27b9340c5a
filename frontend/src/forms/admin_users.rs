//! One user in the admin panel: role and status change as they are picked; deleting first shows what it
//! removes and keeps (`userDeletionPlan`), then asks once more.

use dioxus::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{gql, queries};
use crate::app::{Store, act};

/// A user as the admin query returns it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AdminUser {
    pub uuid: String,
    pub login: String,
    pub email: Option<String>,
    pub role: String,
    pub status: String,
}

/// What deleting a user would do, from `userDeletionPlan`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct DeletionPlan {
    unit_count: u64,
    repo_unit_count: u64,
    link_count: u64,
    affected_unit_count: u64,
    kept_repo_units: Vec<KeptRepoUnit>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct KeptRepoUnit {
    name: String,
    units_of_others: u64,
}

impl DeletionPlan {
    fn summary(&self) -> String {
        let mut text = format!(
            "Deletes {} unit(s), {} repo_unit(s) and {} link(s).",
            self.unit_count, self.repo_unit_count, self.link_count
        );
        if self.affected_unit_count > 0 {
            text.push_str(&format!(
                " {} unit(s) of other users lose an input link.",
                self.affected_unit_count
            ));
        }
        for kept in &self.kept_repo_units {
            text.push_str(&format!(
                " Keeps \"{}\" for the {} unit(s) of others built from it; it passes to the ghost account.",
                kept.name, kept.units_of_others
            ));
        }
        text
    }
}

const ROLES: [(&str, &str); 2] = [("USER", "User"), ("ADMIN", "Admin")];

const STATUSES: [(&str, &str); 3] = [
    ("UNVERIFIED", "Unverified"),
    ("VERIFIED", "Verified"),
    ("BLOCKED", "Blocked"),
];

/// Runs a mutation about a user and tells the list to load again when it worked.
fn run(
    store: Store,
    query: &'static str,
    variables: Value,
    done: &'static str,
    changed: EventHandler<()>,
) {
    spawn(async move {
        if act(store, query, variables, done).await.is_ok() {
            changed.call(());
        }
    });
}

#[component]
pub fn UserRow(user: AdminUser, changed: EventHandler<()>) -> Element {
    let store = use_context::<Store>();
    let mut plan = use_signal(|| None::<DeletionPlan>);
    let role_id = format!("role-{}", user.login);
    let status_id = format!("status-{}", user.login);
    let email = user.email.clone().unwrap_or_default();

    let set_role = {
        let uuid = user.uuid.clone();
        move |e: FormEvent| {
            let variables = json!({ "uuid": uuid, "role": e.value() });
            run(
                store,
                queries::SET_USER_ROLE,
                variables,
                "Role changed",
                changed,
            );
        }
    };
    let set_status = {
        let uuid = user.uuid.clone();
        move |e: FormEvent| {
            let variables = json!({ "uuid": uuid, "status": e.value() });
            run(
                store,
                queries::SET_USER_STATUS,
                variables,
                "Status changed",
                changed,
            );
        }
    };
    let delete = {
        let uuid = user.uuid.clone();
        move |_| {
            let uuid = uuid.clone();
            if plan().is_none() {
                spawn(async move {
                    match gql(queries::USER_DELETION_PLAN, json!({ "uuid": uuid })).await {
                        Ok(data) => match serde_json::from_value::<DeletionPlan>(
                            data["userDeletionPlan"].clone(),
                        ) {
                            Ok(loaded) => plan.set(Some(loaded)),
                            Err(error) => store.say(format!("Unexpected answer: {error}")),
                        },
                        Err(error) => store.say(error.message),
                    }
                });
                return;
            }
            let variables = json!({ "uuid": uuid });
            run(
                store,
                queries::DELETE_USER,
                variables,
                "User deleted",
                changed,
            );
        }
    };

    rsx! {
        li { class: "user", "data-login": "{user.login}",
            span { class: "user-name",
                strong { "{user.login}" }
                " "
                span { class: "muted", "{email}" }
            }
            label { r#for: "{role_id}", "Role" }
            select { id: "{role_id}", onchange: set_role,
                for (v , l) in ROLES {
                    option { value: v, selected: user.role == v, "{l}" }
                }
            }
            label { r#for: "{status_id}", "Status" }
            select { id: "{status_id}", onchange: set_status,
                for (v , l) in STATUSES {
                    option { value: v, selected: user.status == v, "{l}" }
                }
            }
            if let Some(plan) = plan() {
                p { class: "deletion-plan", role: "status", "{plan.summary()}" }
            }
            button { r#type: "button", class: "danger", onclick: delete,
                if plan().is_some() { "Really delete?" } else { "Delete" }
            }
        }
    }
}
