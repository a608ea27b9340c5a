//! A link from an output to an input, and deleting it.

use dioxus::prelude::*;
use serde_json::json;

use super::fields::Modal;
use crate::api::queries;
use crate::app::{Store, act};

#[component]
pub fn LinkPanel(uuid: String) -> Element {
    let store = use_context::<Store>();
    let graph = store.graph.read().clone();
    let Some(link) = graph.links().get(&uuid).cloned() else {
        return rsx! { Modal { title: "Link", p { "This link is gone." } } };
    };
    let name_of = |id: &str| graph.variable_label(id).unwrap_or_else(|| "?".into());
    let (from, to) = (name_of(&link.output_uuid), name_of(&link.input_uuid));
    let delete = move |_| {
        let uuid = uuid.clone();
        spawn(async move {
            if act(
                store,
                queries::DELETE_LINK,
                json!({ "uuid": uuid }),
                "Link deleted",
            )
            .await
            .is_ok()
            {
                store.close();
            }
        });
    };
    rsx! {
        Modal { title: "Link",
            p { "Values of " strong { "{from}" } " go to " strong { "{to}" } "." }
            div { class: "actions",
                button { id: "delete-link", class: "danger", onclick: delete, "Delete link" }
                button { onclick: move |_| store.close(), "Keep" }
            }
        }
    }
}
