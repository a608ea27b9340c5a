//! Building blocks of every form: the modal, labelled fields that show the API's error for them, and
//! the form-level error line.

use dioxus::prelude::*;

use crate::app::Store;
use crate::errors::{self, ApiError};

/// A dialog over the canvas; Escape (see `app`) or the backdrop closes it.
#[component]
pub fn Modal(title: String, #[props(default)] wide: bool, children: Element) -> Element {
    let store = use_context::<Store>();
    let class = if wide { "dialog wide" } else { "dialog" };
    rsx! {
        div { class: "backdrop", onclick: move |_| store.close(),
            div {
                class: "{class}",
                role: "dialog",
                "aria-modal": "true",
                "aria-label": "{title}",
                tabindex: "-1",
                // Keyboard users land in the dialog (so Escape works) unless one of its fields took
                // the focus already.
                onmounted: move |e: MountedEvent| async move {
                    let dialog = e.data().downcast::<web_sys::Element>().cloned();
                    let active = web_sys::window()
                        .and_then(|w| w.document())
                        .and_then(|d| d.active_element());
                    let inside = match (&dialog, &active) {
                        (Some(dialog), Some(active)) => dialog.contains(Some(active)),
                        _ => false,
                    };
                    if !inside {
                        let _ = e.set_focus(true).await;
                    }
                },
                onclick: move |e| e.stop_propagation(),
                div { class: "dialog-head",
                    h2 { "{title}" }
                    button { class: "close", "aria-label": "Close", onclick: move |_| store.close(), "×" }
                }
                {children}
            }
        }
    }
}

/// A labelled text input; `name` is the GraphQL input field, so validation errors land beside it.
#[component]
pub fn TextField(
    label: String,
    name: String,
    value: Signal<String>,
    error: Signal<Option<ApiError>>,
    #[props(default = "text".to_string())] kind: String,
    #[props(default)] focus: bool,
    #[props(default)] hint: String,
    /// The browser's autofill hint (`username`, `new-password`, ...).
    #[props(default = "off".to_string())]
    autocomplete: String,
) -> Element {
    let mut value = value;
    let message = errors::for_field(error.read().as_ref(), &name);
    let invalid = if message.is_some() { "true" } else { "false" };
    let id = format!("field-{name}");
    let described = format!("{id}-error");
    rsx! {
        div { class: "field",
            label { r#for: "{id}", "{label}" }
            input {
                id: "{id}",
                name: "{name}",
                r#type: "{kind}",
                value: "{value}",
                placeholder: "{hint}",
                autocomplete: "{autocomplete}",
                "aria-invalid": invalid,
                "aria-describedby": "{described}",
                oninput: move |e: FormEvent| value.set(e.value()),
                onmounted: move |e: MountedEvent| async move {
                    if focus {
                        let _ = e.set_focus(true).await;
                    }
                },
            }
            if let Some(message) = message {
                p { class: "field-error", id: "{described}", role: "alert", "{message}" }
            }
        }
    }
}

/// A labelled checkbox.
#[component]
pub fn CheckField(label: String, name: String, value: Signal<bool>) -> Element {
    let mut value = value;
    let id = format!("field-{name}");
    rsx! {
        div { class: "field check",
            input {
                id: "{id}",
                name: "{name}",
                r#type: "checkbox",
                checked: value(),
                onchange: move |e: FormEvent| value.set(e.checked()),
            }
            label { r#for: "{id}", "{label}" }
        }
    }
}

/// A labelled choice among `options` (value, label).
#[component]
pub fn SelectField(
    label: String,
    name: String,
    value: Signal<String>,
    options: Vec<(String, String)>,
    error: Signal<Option<ApiError>>,
) -> Element {
    let mut value = value;
    let message = errors::for_field(error.read().as_ref(), &name);
    let id = format!("field-{name}");
    rsx! {
        div { class: "field",
            label { r#for: "{id}", "{label}" }
            select {
                id: "{id}",
                name: "{name}",
                onchange: move |e: FormEvent| value.set(e.value()),
                for (v , l) in options {
                    option { value: "{v}", selected: *value.read() == v, "{l}" }
                }
            }
            if let Some(message) = message {
                p { class: "field-error", role: "alert", "{message}" }
            }
        }
    }
}

/// The error of a form that is not about one of its `fields`.
#[component]
pub fn FormError(error: Signal<Option<ApiError>>, fields: Vec<String>) -> Element {
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let message = errors::general(error.read().as_ref(), &fields);
    rsx! {
        if let Some(message) = message {
            p { class: "form-error", role: "alert", "{message}" }
        }
    }
}

/// The visibility levels, for select fields.
pub fn visibilities() -> Vec<(String, String)> {
    [
        ("PUBLIC", "Public"),
        ("FEDERATED", "This instance and its peers"),
        ("INTERNAL", "This instance"),
        ("PRIVATE", "Only me"),
    ]
    .into_iter()
    .map(|(v, l)| (v.to_owned(), l.to_owned()))
    .collect()
}

/// The names of fields, owned, for [`FormError`].
pub fn names(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_owned()).collect()
}
