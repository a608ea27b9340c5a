//! Mirror nodes on the canvas: read-only (their values come from their home instance), drawn with a
//! dashed outline and their instance's domain, with a dashed edge to each input they feed; see
//! [`crate::mirrors`] for where they go. Read again after every change, and every few seconds while
//! there are any.

use std::collections::HashMap;

use dioxus::prelude::*;
use serde_json::json;

use super::node::outline;
use crate::api::{gql, queries};
use crate::app::Store;
use crate::layout::{Point, size};
use crate::mirrors::{RemoteUnit, mirrors, refresh_after};
use crate::model::NodeKind;

/// Waits `ms` milliseconds (a browser timer).
async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// The mirror nodes and their edges; `inputs` are the inputs drawn now, by uuid, at their top-left.
#[component]
pub fn MirrorNodes(inputs: HashMap<String, Point>) -> Element {
    let store = use_context::<Store>();
    let mut tick = use_signal(|| 0u64);
    let remote = use_resource(move || async move {
        let _ = (store.generation)();
        let _ = tick();
        if !(store.logged_in)() {
            return Vec::new();
        }
        gql(queries::REMOTE_UNITS, json!({}))
            .await
            .ok()
            .and_then(|data| serde_json::from_value(data["remoteUnits"].clone()).ok())
            .unwrap_or_default()
    });
    use_effect(move || {
        let units: Vec<RemoteUnit> = remote.read().clone().unwrap_or_default();
        if let Some(ms) = refresh_after(&units) {
            spawn(async move {
                sleep(ms).await;
                *tick.write() += 1;
            });
        }
    });
    let units: Vec<RemoteUnit> = remote.read().clone().unwrap_or_default();
    let drawn = mirrors(&units, &inputs);
    let (w, h) = size(NodeKind::Output);
    rsx! {
        for m in drawn {
            g { key: "{m.key}", class: "mirror-group",
                for (i , to) in m.targets.iter().enumerate() {
                    path {
                        key: "{i}",
                        class: "edge link mirror-link",
                        style: "stroke-dasharray: 6 4;",
                        d: "M{m.at.x},{m.at.y + h / 2.0} L{to.x},{to.y}",
                    }
                }
                g {
                    transform: "translate({m.at.x},{m.at.y})",
                    class: if m.available { "shape output mirror" } else { "shape output mirror unavailable" },
                    role: "img",
                    "aria-label": "mirror: {m.title} of {m.unit} on {m.domain} ({m.detail})",
                    "data-kind": "mirror",
                    "data-domain": "{m.domain}",
                    "data-available": if m.available { "true" } else { "false" },
                    path {
                        class: "body",
                        d: outline(NodeKind::Unit, w, h),
                        style: if m.available { "stroke-dasharray: 6 4; fill-opacity: 0.55;" } else { "stroke-dasharray: 2 4; fill-opacity: 0.2;" },
                    }
                    text { class: "domain", x: "4", y: "-6", style: "font-size: 11px; opacity: 0.8;", "⇄ {m.domain} · {m.unit}" }
                    text { class: "title", x: "12", y: "{h / 2.0 - 4.0}", "{m.title}" }
                    text { class: "detail", x: "12", y: "{h / 2.0 + 12.0}", "data-value": "{m.detail}", "{m.detail}" }
                }
            }
        }
    }
}
