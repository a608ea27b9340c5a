//! The admin panel (admins only): the instance settings and the users, see [`super::admin_users`].

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::admin_users::{AdminUser, UserRow};
use super::fields::{CheckField, FormError, Modal, names};
use crate::api::{gql, queries};
use crate::app::{Store, act};
use crate::broker::MqttBroker;

const FIELDS: [&str; 3] = [
    "registrationOpen",
    "manualVerification",
    "federationEnabled",
];

#[component]
pub fn AdminPanel() -> Element {
    let mut answer = use_resource(|| async { gql(queries::ADMIN, json!({})).await });
    let body = match answer.read().clone() {
        None => rsx! { p { class: "muted", "Loading…" } },
        Some(Err(error)) => rsx! { p { class: "form-error", role: "alert", "{error.message}" } },
        Some(Ok(data)) => {
            let users: Vec<AdminUser> =
                serde_json::from_value(data["users"].clone()).unwrap_or_default();
            let flag = |name: &str| data["instanceSettings"][name].as_bool().unwrap_or_default();
            let broker: Option<MqttBroker> =
                serde_json::from_value(data["mqttBroker"].clone()).ok();
            rsx! {
                h3 { "Instance" }
                if let Some(broker) = broker {
                    p { id: "mqtt-broker", class: "muted",
                        "Units reach the MQTT broker at {broker.address()}"
                        if let Some(taken) = broker.default_port_taken {
                            " (port {taken} was taken at start-up)"
                        }
                        "."
                    }
                }
                SettingsForm {
                    registration_open: flag("registrationOpen"),
                    manual_verification: flag("manualVerification"),
                    federation_enabled: flag("federationEnabled"),
                }
                h3 { "Users" }
                ul { class: "users", id: "users",
                    for user in users {
                        UserRow { key: "{user.uuid}", user, changed: move |_| answer.restart() }
                    }
                }
            }
        }
    };
    rsx! {
        Modal { title: "Admin", wide: true, {body} }
    }
}

/// The instance's switches, as they are now.
#[component]
fn SettingsForm(
    registration_open: bool,
    manual_verification: bool,
    federation_enabled: bool,
) -> Element {
    let store = use_context::<Store>();
    let registration = use_signal(|| registration_open);
    let manual = use_signal(|| manual_verification);
    let federation = use_signal(|| federation_enabled);
    let mut error = use_signal(|| None);

    let submit = move |e: FormEvent| {
        e.prevent_default();
        let input: Value = json!({
            "registrationOpen": registration(),
            "manualVerification": manual(),
            "federationEnabled": federation(),
        });
        spawn(async move {
            match act(
                store,
                queries::UPDATE_INSTANCE_SETTINGS,
                json!({ "input": input }),
                "Settings saved",
            )
            .await
            {
                Ok(_) => error.set(None),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    rsx! {
        form { id: "settings-form", onsubmit: submit,
            FormError { error, fields: names(&FIELDS) }
            CheckField { label: "Anyone may register", name: "registrationOpen", value: registration }
            CheckField { label: "New accounts wait for an admin to verify them", name: "manualVerification", value: manual }
            CheckField { label: "Federation with other instances", name: "federationEnabled", value: federation }
            div { class: "actions",
                button { class: "primary", r#type: "submit", "Save settings" }
            }
        }
    }
}
