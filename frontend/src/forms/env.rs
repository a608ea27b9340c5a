//! Edit a unit's env.json as JSON; the server checks the keys and types.

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::fields::{FormError, Modal, names};
use crate::api::{gql, queries};
use crate::app::{Dialog, Store, act};
use crate::errors::{self, ApiError};

#[component]
pub fn EnvForm(uuid: String) -> Element {
    let store = use_context::<Store>();
    let mut text = use_signal(String::new);
    let mut error = use_signal(|| None::<ApiError>);
    let _loaded = use_resource({
        let uuid = uuid.clone();
        move || {
            let uuid = uuid.clone();
            async move {
                match gql(queries::UNIT_ENV, json!({ "uuid": uuid })).await {
                    Ok(data) => text.set(
                        serde_json::to_string_pretty(&data["unit"]["env"]).unwrap_or_default(),
                    ),
                    Err(e) => error.set(Some(e)),
                }
            }
        }
    });
    let submit = {
        let uuid = uuid.clone();
        move |e: FormEvent| {
            e.prevent_default();
            let env: Value = match serde_json::from_str(&text()) {
                Ok(env) => env,
                Err(parse) => {
                    error.set(Some(ApiError {
                        message: format!("not valid JSON: {parse}"),
                        code: "VALIDATION".into(),
                        field: Some("env".into()),
                    }));
                    return;
                }
            };
            let uuid = uuid.clone();
            spawn(async move {
                match act(
                    store,
                    queries::SET_UNIT_ENV,
                    json!({ "uuid": uuid, "env": env }),
                    "env.json saved",
                )
                .await
                {
                    Ok(_) => store.open(Dialog::Unit(uuid)),
                    Err(e) => error.set(Some(e)),
                }
            });
        }
    };
    let message = errors::for_field(error.read().as_ref(), "env");
    let invalid = if message.is_some() { "true" } else { "false" };
    rsx! {
        Modal { title: "env.json", wide: true,
            form { id: "env-form", onsubmit: submit,
                FormError { error, fields: names(&["env"]) }
                div { class: "field",
                    label { r#for: "field-env", "Settings of the unit (its token and keys are kept by the server)" }
                    textarea {
                        id: "field-env",
                        rows: "14",
                        spellcheck: "false",
                        value: "{text}",
                        "aria-invalid": invalid,
                        oninput: move |e: FormEvent| text.set(e.value()),
                    }
                    if let Some(message) = message {
                        p { class: "field-error", role: "alert", "{message}" }
                    }
                }
                div { class: "actions",
                    button { class: "primary", r#type: "submit", "Save env.json" }
                    button { r#type: "button", onclick: move |_| store.open(Dialog::Unit(uuid.clone())), "Back" }
                }
            }
        }
    }
}
