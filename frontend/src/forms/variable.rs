//! An input or output: its value and history chart, setting an input, linking an output to an input,
//! and its links.

use dioxus::prelude::*;
use serde_json::json;

use super::alert_rules::{AlertRules, Watched};
use super::fields::{CheckField, FormError, Modal, SelectField, TextField, names};
use super::series_chart::SeriesChart;
use crate::api::{gql, queries};
use crate::app::{Dialog, Store, act_in_form};

#[component]
pub fn VariablePanel(uuid: String) -> Element {
    let store = use_context::<Store>();
    let graph = store.graph.read().clone();
    let Some(node) = graph.variable(&uuid).cloned() else {
        return rsx! { Modal { title: "Variable", p { "This variable is gone." } } };
    };
    let unit_name = graph
        .unit(&node.unit_uuid)
        .map(|u| u.name.clone())
        .unwrap_or_default();
    let value = use_signal(String::new);
    let target = use_signal(String::new);
    let error = use_signal(|| None);
    let settings = use_resource({
        let uuid = uuid.clone();
        move || {
            let _ = (store.generation)();
            let uuid = uuid.clone();
            async move {
                gql(queries::NODE_SETTINGS, json!({ "uuid": uuid }))
                    .await
                    .ok()
            }
        }
    });
    let settings = settings
        .read()
        .clone()
        .flatten()
        .map(|d| d["unitNode"].clone());
    let inputs: Vec<(String, String)> = graph
        .units
        .iter()
        .flat_map(|u| {
            u.nodes
                .iter()
                .filter(|n| n.is_input())
                .map(move |n| (n.uuid.clone(), format!("{} · {}", u.name, n.short_name())))
        })
        .collect();
    let name_of = |id: &str| {
        graph
            .variable_label(id)
            .unwrap_or_else(|| "a variable you cannot see".into())
    };
    let links: Vec<(String, String)> = node
        .links
        .iter()
        .map(|l| {
            let other = if node.is_input() {
                &l.output_uuid
            } else {
                &l.input_uuid
            };
            (l.uuid.clone(), name_of(other))
        })
        .collect();

    let set_value = {
        let uuid = uuid.clone();
        move |e: FormEvent| {
            e.prevent_default();
            act_in_form(
                store,
                error,
                queries::SET_INPUT_VALUE,
                json!({ "uuid": uuid, "value": value() }),
                "Value sent",
            );
        }
    };
    let link = {
        let uuid = uuid.clone();
        move |e: FormEvent| {
            e.prevent_default();
            act_in_form(
                store,
                error,
                queries::CREATE_LINK,
                json!({ "output": uuid, "input": target() }),
                "Linked",
            );
        }
    };
    let kind = if node.is_input() { "Input" } else { "Output" };
    let last = node.last_value.clone().unwrap_or_else(|| "—".into());
    let at = node.last_value_at.clone().unwrap_or_default();

    rsx! {
        Modal { title: "{kind} {node.short_name()} of {unit_name}",
            dl { class: "facts",
                dt { "Value" }
                dd { id: "variable-value", "{last}" }
                dt { "At" }
                dd { "{at}" }
                dt { "Topic" }
                dd { code { "{node.topic_name}" } }
            }
            SeriesChart { uuid: uuid.clone() }
            FormError { error, fields: names(&["value", "outputUuid", "inputUuid"]) }
            if node.is_input() {
                form { id: "input-value-form", onsubmit: set_value,
                    TextField { label: "New value", name: "value", value, error, focus: true }
                    div { class: "actions", button { class: "primary", r#type: "submit", "Send" } }
                }
            } else {
                form { id: "link-form", onsubmit: link,
                    SelectField {
                        label: "Link to input",
                        name: "inputUuid",
                        value: target,
                        options: [(String::new(), "— pick an input —".to_string())].into_iter().chain(inputs).collect::<Vec<_>>(),
                        error,
                    }
                    div { class: "actions", button { class: "primary", r#type: "submit", "Link" } }
                }
            }
            if let Some(current) = settings {
                NodeSettings { uuid: uuid.clone(), current, input: node.is_input() }
            }
            if !node.is_input() {
                super::processing::ProcessingSettings { uuid: uuid.clone() }
                AlertRules { watched: Watched::Output(uuid.clone()) }
            }
            h3 { "Links" }
            if links.is_empty() {
                p { class: "muted", "No links. Drag from an output's port to an input to add one." }
            }
            ul { class: "list",
                for (link_uuid , other) in links {
                    li {
                        button { class: "link-button", onclick: move |_| store.open(Dialog::Link(link_uuid.clone())), "{other}" }
                    }
                }
            }
        }
    }
}

/// How much history a variable keeps, and whether others may write an input.
#[component]
fn NodeSettings(uuid: String, current: serde_json::Value, input: bool) -> Element {
    let store = use_context::<Store>();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let kind = use_signal(|| {
        current["historyKind"]
            .as_str()
            .unwrap_or("LAST_VALUE")
            .to_owned()
    });
    let limit = use_signal(|| text(&current["historyLimit"]));
    let window = use_signal(|| text(&current["historyWindowSeconds"]));
    let rewritable = use_signal(|| current["isRewritableInput"].as_bool().unwrap_or(false));
    let error = use_signal(|| None);
    let save = move |e: FormEvent| {
        e.prevent_default();
        let mut settings = json!({ "historyKind": kind() });
        for (field, value) in [
            ("historyLimit", limit()),
            ("historyWindowSeconds", window()),
        ] {
            if let Ok(number) = value.trim().parse::<i64>() {
                settings[field] = json!(number);
            }
        }
        if input {
            settings["isRewritableInput"] = json!(rewritable());
        }
        act_in_form(
            store,
            error,
            queries::UPDATE_NODE,
            json!({ "uuid": uuid, "input": settings }),
            "Saved",
        );
    };
    let kinds = [
        ("LAST_VALUE", "Last value only"),
        ("LAST_N", "Last N values"),
        ("WINDOW", "A time window"),
    ]
    .into_iter()
    .map(|(v, l)| (v.to_owned(), l.to_owned()))
    .collect::<Vec<_>>();
    rsx! {
        details { class: "settings",
            summary { "History settings" }
            form { onsubmit: save,
                FormError { error, fields: names(&["historyKind", "historyLimit", "historyWindowSeconds"]) }
                SelectField { label: "Keep", name: "historyKind", value: kind, options: kinds, error }
                if kind() == "LAST_N" {
                    TextField { label: "How many values", name: "historyLimit", value: limit, error, kind: "number" }
                }
                if kind() == "WINDOW" {
                    TextField { label: "How many seconds", name: "historyWindowSeconds", value: window, error, kind: "number" }
                }
                if input {
                    CheckField { label: "Others may write this input", name: "isRewritableInput", value: rewritable }
                }
                div { class: "actions", button { r#type: "submit", "Save settings" } }
            }
        }
    }
}
