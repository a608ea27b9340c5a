//! Log in, or register and then log in.

use dioxus::prelude::*;
use serde_json::json;

use super::fields::{FormError, Modal, TextField, names};
use crate::api::{Session, gql, queries};
use crate::app::{Dialog, Store};

const FIELDS: [&str; 3] = ["login", "email", "password"];

#[component]
pub fn AuthForm(register: bool) -> Element {
    let mut store = use_context::<Store>();
    let login = use_signal(String::new);
    let email = use_signal(String::new);
    let password = use_signal(String::new);
    let mut error = use_signal(|| None);
    let mut busy = use_signal(|| false);
    let title = if register {
        "Create an account"
    } else {
        "Log in"
    };

    let submit = move |e: FormEvent| {
        e.prevent_default();
        busy.set(true);
        spawn(async move {
            if register {
                let input = json!({ "login": login(), "email": email(), "password": password() });
                if let Err(e) = gql(queries::REGISTER, json!({ "input": input })).await {
                    error.set(Some(e));
                    busy.set(false);
                    return;
                }
            }
            match gql(
                queries::LOGIN,
                json!({ "login": login(), "password": password() }),
            )
            .await
            {
                Ok(data) => {
                    Session::store(&data["login"]);
                    store.logged_in.set(true);
                    store.close();
                    store.reload();
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };

    rsx! {
        Modal { title,
            form { onsubmit: submit, id: "auth-form",
                FormError { error, fields: names(&FIELDS) }
                TextField { label: "Login", name: "login", value: login, error, focus: true, autocomplete: "username" }
                if register {
                    TextField { label: "E-mail", name: "email", value: email, error, kind: "email", autocomplete: "email" }
                }
                TextField {
                    label: "Password",
                    name: "password",
                    value: password,
                    error,
                    kind: "password",
                    autocomplete: if register { "new-password" } else { "current-password" },
                }
                div { class: "actions",
                    button { class: "primary", r#type: "submit", disabled: busy(), "{title}" }
                    if register {
                        button { r#type: "button", onclick: move |_| store.open(Dialog::Login), "I have an account" }
                    } else {
                        button { r#type: "button", id: "to-register", onclick: move |_| store.open(Dialog::Register), "Create an account" }
                    }
                }
            }
        }
    }
}
