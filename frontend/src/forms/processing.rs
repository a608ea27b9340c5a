//! An output's processing in its variable panel: the filters applied before anything is stored, the
//! aggregate windows with their retention, and how many values each filter turned away.

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::fields::{CheckField, FormError, SelectField, TextField, names};
use crate::api::{gql, queries};
use crate::app::{Store, act_in_form};

/// A number field's value, empty when unset.
fn text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[component]
pub fn ProcessingSettings(uuid: String) -> Element {
    let store = use_context::<Store>();
    let loaded = use_resource({
        let uuid = uuid.clone();
        move || {
            let _ = (store.generation)();
            let uuid = uuid.clone();
            async move {
                gql(queries::NODE_PROCESSING, json!({ "uuid": uuid }))
                    .await
                    .ok()
            }
        }
    });
    let Some(Some(data)) = loaded.read().clone() else {
        return rsx! {};
    };
    let node = data["unitNode"].clone();
    rsx! {
        ProcessingForm { key: "{uuid}-{node}", uuid: uuid.clone(), node }
    }
}

#[component]
fn ProcessingForm(uuid: String, node: Value) -> Element {
    let store = use_context::<Store>();
    let current = &node["processing"];
    let value_type = use_signal(|| current["valueType"].as_str().unwrap_or("ANY").to_owned());
    let min = use_signal(|| text(&current["min"]));
    let max = use_signal(|| text(&current["max"]));
    let rate = use_signal(|| text(&current["maxRate"]["samples"]));
    let per = use_signal(|| text(&current["maxRate"]["perSeconds"]));
    let deduplicate = use_signal(|| current["deduplicate"].as_bool().unwrap_or(false));
    let windows_list = current["windows"].as_array().cloned().unwrap_or_default();
    let windows = use_signal(|| {
        windows_list
            .iter()
            .map(|w| text(&w["seconds"]))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let keep_count = use_signal(|| {
        windows_list
            .first()
            .map(|w| text(&w["keepCount"]))
            .unwrap_or_default()
    });
    let keep_seconds = use_signal(|| {
        windows_list
            .first()
            .map(|w| text(&w["keepSeconds"]))
            .unwrap_or_default()
    });
    let error = use_signal(|| None);
    let save = move |e: FormEvent| {
        e.prevent_default();
        let number = |s: String| s.trim().parse::<f64>().ok();
        let whole = |s: String| s.trim().parse::<u64>().ok();
        let mut processing = json!({ "valueType": value_type(), "deduplicate": deduplicate() });
        if let Some(v) = number(min()) {
            processing["min"] = json!(v);
        }
        if let Some(v) = number(max()) {
            processing["max"] = json!(v);
        }
        if let (Some(samples), Some(per)) = (whole(rate()), whole(per())) {
            processing["maxRate"] = json!({ "samples": samples, "perSeconds": per });
        }
        let windows: Vec<Value> = windows()
            .split(',')
            .filter_map(|w| w.trim().parse::<u64>().ok())
            .map(|seconds| {
                let mut window = json!({ "seconds": seconds });
                if let Some(count) = whole(keep_count()) {
                    window["keepCount"] = json!(count);
                }
                if let Some(age) = whole(keep_seconds()) {
                    window["keepSeconds"] = json!(age);
                }
                window
            })
            .collect();
        processing["windows"] = json!(windows);
        act_in_form(
            store,
            error,
            queries::UPDATE_NODE,
            json!({ "uuid": uuid, "input": { "processing": processing } }),
            "Saved",
        );
    };
    let types = [
        ("ANY", "Anything"),
        ("NUMBER", "Numbers"),
        ("TEXT", "Text"),
        ("JSON", "JSON"),
    ]
    .into_iter()
    .map(|(v, l)| (v.to_owned(), l.to_owned()))
    .collect::<Vec<_>>();
    let rejections: Vec<(String, i64)> = node["rejections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase()
                    .replace('_', " "),
                r["count"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    rsx! {
        details { class: "settings", id: "processing-settings",
            summary { "Processing" }
            form { onsubmit: save,
                FormError { error, fields: names(&["processing"]) }
                SelectField { label: "Accept", name: "valueType", value: value_type, options: types, error }
                TextField { label: "Lowest number", name: "min", value: min, error, kind: "number" }
                TextField { label: "Highest number", name: "max", value: max, error, kind: "number" }
                TextField { label: "At most this many values", name: "rate", value: rate, error, kind: "number" }
                TextField { label: "… per this many seconds", name: "per", value: per, error, kind: "number" }
                CheckField { label: "Drop repeats of the last value", name: "deduplicate", value: deduplicate }
                TextField { label: "Aggregate windows (seconds, comma-separated, 60 to 86400)", name: "windows", value: windows, error, hint: "60, 3600" }
                TextField { label: "Keep this many windows of each", name: "keepCount", value: keep_count, error, kind: "number", hint: "10000" }
                TextField { label: "Keep windows this many seconds", name: "keepSeconds", value: keep_seconds, error, kind: "number" }
                div { class: "actions", button { r#type: "submit", "Save processing" } }
            }
            if rejections.is_empty() {
                p { class: "muted", "No values turned away." }
            } else {
                dl { class: "facts", id: "processing-rejections",
                    for (reason , count) in rejections {
                        dt { "{reason}" }
                        dd { "{count}" }
                    }
                }
            }
        }
    }
}
