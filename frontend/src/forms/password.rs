//! Change the password: the server ends every other session and answers with new tokens, kept as
//! login keeps them.

use dioxus::prelude::*;
use serde_json::json;

use super::fields::{FormError, Modal, TextField, names};
use crate::api::{Session, gql, queries};
use crate::app::Store;

const FIELDS: [&str; 2] = ["oldPassword", "newPassword"];

#[component]
pub fn ChangePassword() -> Element {
    let store = use_context::<Store>();
    let old = use_signal(String::new);
    let new = use_signal(String::new);
    let mut error = use_signal(|| None);
    let mut busy = use_signal(|| false);

    let submit = move |e: FormEvent| {
        e.prevent_default();
        busy.set(true);
        spawn(async move {
            match gql(
                queries::CHANGE_PASSWORD,
                json!({ "old": old(), "new": new() }),
            )
            .await
            {
                Ok(data) => {
                    Session::store(&data["changePassword"]);
                    store.say("Password changed; other sessions have ended");
                    store.close();
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };

    rsx! {
        Modal { title: "Change password",
            form { id: "password-form", onsubmit: submit,
                FormError { error, fields: names(&FIELDS) }
                TextField { label: "Current password", name: "oldPassword", value: old, error, kind: "password", focus: true, autocomplete: "current-password" }
                TextField { label: "New password", name: "newPassword", value: new, error, kind: "password", autocomplete: "new-password" }
                div { class: "actions",
                    button { class: "primary", r#type: "submit", disabled: busy(), "Change password" }
                    button { r#type: "button", onclick: move |_| store.close(), "Cancel" }
                }
            }
        }
    }
}
