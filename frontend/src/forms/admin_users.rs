//! One user in the admin panel: role and status change as they are picked; deleting asks once more.

use dioxus::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::queries;
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
    let mut confirm_delete = use_signal(|| false);
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
            if !confirm_delete() {
                confirm_delete.set(true);
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
            button { r#type: "button", class: "danger", onclick: delete,
                if confirm_delete() { "Really delete?" } else { "Delete" }
            }
        }
    }
}
