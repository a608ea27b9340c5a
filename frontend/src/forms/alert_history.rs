//! The user's recent alerts, newest first, read again every few seconds while the tab is open.

use dioxus::prelude::*;
use serde_json::json;

use super::alerts::sleep;
use crate::alerts::{Alert, when};
use crate::api::{gql, queries};

const POLL_MS: i32 = 5000;

#[component]
pub fn History() -> Element {
    let mut tick = use_signal(|| 0_u32);
    let alerts = use_resource(move || {
        let _ = tick();
        async move { gql(queries::ALERTS, json!({})).await }
    });
    use_future(move || async move {
        loop {
            sleep(POLL_MS).await;
            tick += 1;
        }
    });
    let (list, load_error): (Vec<Alert>, Option<String>) = match &*alerts.read() {
        None => (Vec::new(), None),
        Some(Ok(data)) => (
            serde_json::from_value(data["alerts"].clone()).unwrap_or_default(),
            None,
        ),
        Some(Err(e)) => (Vec::new(), Some(e.message.clone())),
    };
    let empty = list.is_empty() && alerts.read().is_some();
    rsx! {
        if let Some(message) = load_error {
            p { class: "form-error", role: "alert", "{message}" }
        }
        if empty {
            p { class: "muted", "No alerts yet." }
        }
        if !list.is_empty() {
            div { class: "table-wrap",
                table { id: "alert-history", class: "history",
                    thead {
                        tr {
                            th { "Time" }
                            th { "Unit" }
                            th { "Variable" }
                            th { "Value" }
                            th { "Alert" }
                        }
                    }
                    tbody {
                        for alert in list {
                            tr {
                                key: "{alert.uuid}",
                                class: "alert {alert.kind}",
                                "data-kind": "{alert.kind}",
                                title: "{alert.message}",
                                td { "{when(&alert.created_at)}" }
                                td { "{alert.unit_name.clone().unwrap_or_default()}" }
                                td { "{alert.variable.clone().unwrap_or_default()}" }
                                td { "{alert.value.clone().unwrap_or_default()}" }
                                td {
                                    if alert.kind == "resolved" { "back to normal" } else { "fired" }
                                    " ({alert.rule_kind.replace('_', \" \")})"
                                    if alert.muted {
                                        span { class: "muted", " · muted" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
