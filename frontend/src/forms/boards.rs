//! The board editor: the user's boards for the Telegram bot, and a new board composed of inputs (a
//! button with a preset value, or none: the bot asks for one) and outputs (shown with their values)
//! picked from the nodes the user can see.

use dioxus::prelude::*;
use serde_json::json;

use super::fields::{FormError, SelectField, TextField, names};
use crate::alerts::Board;
use crate::api::{gql, queries};
use crate::app::{Store, act};

/// An item of the board being composed.
#[derive(Clone, Debug, PartialEq)]
struct Item {
    node: String,
    /// Which node it is, for the list.
    shown: String,
    label: String,
    value: Option<String>,
}

#[component]
pub fn Boards() -> Element {
    let store = use_context::<Store>();
    let mut name = use_signal(String::new);
    let mut node = use_signal(String::new);
    let mut label = use_signal(String::new);
    let mut value = use_signal(String::new);
    let mut items = use_signal(Vec::<Item>::new);
    let mut error = use_signal(|| None);
    let boards = use_resource(move || {
        let _ = (store.generation)();
        async move { gql(queries::BOARDS, json!({})).await }
    });
    let (list, load_error): (Vec<Board>, Option<String>) = match &*boards.read() {
        None => (Vec::new(), None),
        Some(Ok(data)) => (
            serde_json::from_value(data["boards"].clone()).unwrap_or_default(),
            None,
        ),
        Some(Err(e)) => (Vec::new(), Some(e.message.clone())),
    };
    // Every variable on the canvas: inputs become buttons, outputs show their values.
    let nodes: Vec<(String, String, bool)> = store
        .graph
        .read()
        .units
        .iter()
        .flat_map(|u| {
            u.nodes.iter().map(move |n| {
                let kind = if n.is_input() { "button" } else { "value" };
                (
                    n.uuid.clone(),
                    format!("{} · {} ({kind})", u.name, n.short_name()),
                    n.is_input(),
                )
            })
        })
        .collect();
    let picked_input = nodes
        .iter()
        .any(|(uuid, _, input)| *uuid == node() && *input);
    let options: Vec<(String, String)> = [(String::new(), "— pick a variable —".to_string())]
        .into_iter()
        .chain(
            nodes
                .iter()
                .map(|(uuid, shown, _)| (uuid.clone(), shown.clone())),
        )
        .collect();

    let add_item = move |_| {
        let picked = node();
        let Some((_, shown, input)) = nodes.iter().find(|(uuid, _, _)| *uuid == picked).cloned()
        else {
            return;
        };
        let preset = value().trim().to_owned();
        items.write().push(Item {
            node: picked,
            shown,
            label: label().trim().to_owned(),
            value: (input && !preset.is_empty()).then_some(preset),
        });
        node.set(String::new());
        label.set(String::new());
        value.set(String::new());
    };
    let create = move |e: FormEvent| {
        e.prevent_default();
        let input: Vec<_> = items
            .read()
            .iter()
            .map(|i| {
                let mut item = json!({ "nodeUuid": i.node, "value": i.value });
                if !i.label.is_empty() {
                    item["label"] = json!(i.label);
                }
                item
            })
            .collect();
        let variables = json!({ "input": { "name": name(), "items": input } });
        spawn(async move {
            match act(store, queries::CREATE_BOARD, variables, "Board created").await {
                Ok(_) => {
                    error.set(None);
                    name.set(String::new());
                    items.write().clear();
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let pending = items.read().clone();

    rsx! {
        if let Some(message) = load_error {
            p { class: "form-error", role: "alert", "{message}" }
        }
        p { class: "muted", "The Telegram bot shows a board with /boards: inputs as buttons, outputs with their latest values." }
        if list.is_empty() && boards.read().is_some() {
            p { class: "muted", "No boards yet." }
        }
        ul { id: "boards", class: "rows",
            for board in list {
                BoardRow { key: "{board.uuid}", board }
            }
        }
        h3 { "New board" }
        form { id: "board-form", onsubmit: create,
            FormError { error, fields: names(&["name", "items", "nodeUuid", "label", "value"]) }
            TextField { label: "Board name", name: "name", value: name, error }
            fieldset { class: "board-item",
                legend { "Add a variable" }
                SelectField { label: "Variable", name: "nodeUuid", value: node, options, error }
                TextField { label: "Label (optional)", name: "label", value: label, error }
                if picked_input {
                    TextField { label: "Value the button sets", name: "value", value, error, hint: "empty: the bot asks for one" }
                }
                div { class: "actions",
                    button { id: "add-board-item", r#type: "button", disabled: node().is_empty(), onclick: add_item, "Add to board" }
                }
            }
            if pending.is_empty() {
                p { class: "muted", "Nothing on the board yet." }
            }
            ul { id: "board-items", class: "rows",
                for (index , item) in pending.into_iter().enumerate() {
                    li { class: "row", key: "{index}-{item.node}",
                        span { class: "row-text",
                            "{item.shown}"
                            if !item.label.is_empty() {
                                " as “{item.label}”"
                            }
                            if let Some(v) = &item.value {
                                " sets {v}"
                            }
                        }
                        button {
                            r#type: "button",
                            "aria-label": "Remove {item.shown}",
                            onclick: move |_| {
                                items.write().remove(index);
                            },
                            "×"
                        }
                    }
                }
            }
            div { class: "actions", button { class: "primary", r#type: "submit", "Create board" } }
        }
    }
}

/// A board: its name, its items, delete.
#[component]
fn BoardRow(board: Board) -> Element {
    let store = use_context::<Store>();
    let mut confirm_delete = use_signal(|| false);
    let delete = {
        let uuid = board.uuid.clone();
        move |_| {
            if !confirm_delete() {
                confirm_delete.set(true);
                return;
            }
            let uuid = uuid.clone();
            spawn(async move {
                let _ = act(
                    store,
                    queries::DELETE_BOARD,
                    json!({ "uuid": uuid }),
                    "Board deleted",
                )
                .await;
            });
        }
    };
    let items: Vec<String> = board.items.iter().map(|i| i.describe()).collect();
    let items = items.join("  ");
    rsx! {
        li { class: "row board", "data-name": "{board.name}",
            span { class: "row-text",
                strong { "{board.name}" }
                " "
                span { class: "board-items", "{items}" }
            }
            button { r#type: "button", class: "danger", onclick: delete,
                if confirm_delete() { "Really delete?" } else { "Delete" }
            }
        }
    }
}
