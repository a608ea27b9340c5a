//! The user's alert settings, reached from the toolbar: where alerts go (channels), the boards of the
//! Telegram bot, and the alert history, one tab each.

use dioxus::prelude::*;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use super::alert_channels::Channels;
use super::alert_history::History;
use super::boards::Boards;
use super::fields::Modal;

#[derive(Clone, Copy, PartialEq)]
enum Tab {
    Channels,
    Boards,
    History,
}

const TABS: [(Tab, &str, &str); 3] = [
    (Tab::Channels, "tab-channels", "Channels"),
    (Tab::Boards, "tab-boards", "Boards"),
    (Tab::History, "tab-history", "History"),
];

#[component]
pub fn AlertsPanel() -> Element {
    let mut tab = use_signal(|| Tab::Channels);
    rsx! {
        Modal { title: "Alerts", wide: true,
            div { class: "tabs", role: "tablist",
                for (which , id , label) in TABS {
                    button {
                        id: "{id}",
                        r#type: "button",
                        role: "tab",
                        "aria-selected": if tab() == which { "true" } else { "false" },
                        onclick: move |_| tab.set(which),
                        "{label}"
                    }
                }
            }
            match tab() {
                Tab::Channels => rsx! { Channels {} },
                Tab::Boards => rsx! { Boards {} },
                Tab::History => rsx! { History {} },
            }
        }
    }
}

/// Waits `ms` milliseconds (the browser's timer), for views that look again while they are open; the
/// task that waits ends with its component.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _: Result<JsValue, JsValue> = JsFuture::from(promise).await;
}
