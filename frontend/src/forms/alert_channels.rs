//! Where the user's alerts go: linking a Telegram chat with a one-time code, the linked chats, and
//! webhooks (added with a URL; the signing secret is shown once). A paused channel says why and can be
//! resumed.

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::alerts::sleep;
use super::fields::{FormError, TextField, names};
use crate::alerts::{Channel, when};
use crate::api::{gql, queries};
use crate::app::{Store, act};
use crate::errors::ApiError;

/// How often the list is read again while a link code waits for its chat.
const POLL_MS: i32 = 2000;

/// How many Telegram chats an `alertChannels` answer lists.
fn chats_in(answer: &Option<Result<Value, ApiError>>) -> usize {
    match answer {
        Some(Ok(data)) => data["alertChannels"].as_array().map_or(0, |list| {
            list.iter().filter(|c| c["kind"] == "telegram").count()
        }),
        _ => 0,
    }
}

#[component]
pub fn Channels() -> Element {
    let store = use_context::<Store>();
    let mut refresh = use_signal(|| 0_u32);
    let mut code = use_signal(|| None::<Value>);
    // The chats there were when the code was made: one more means the code did its job.
    let mut chats_before = use_signal(|| 0_usize);
    let mut code_error = use_signal(|| None::<ApiError>);
    let mut url = use_signal(String::new);
    let mut error = use_signal(|| None::<ApiError>);
    let mut secret = use_signal(|| None::<(String, String)>);
    let channels = use_resource(move || {
        let _ = (refresh(), (store.generation)());
        async move { gql(queries::ALERT_CHANNELS, json!({})).await }
    });
    // A chat is linked in Telegram, not here: while a code is valid, look for it now and then.
    use_future(move || async move {
        loop {
            sleep(POLL_MS).await;
            let Some(valid_until) = code
                .read()
                .as_ref()
                .map(|c| c["expiresAt"].as_str().map_or(0.0, js_sys::Date::parse))
            else {
                continue;
            };
            if chats_in(&channels.read()) > chats_before() {
                code.set(None);
                store.say("Telegram chat linked");
            } else if valid_until > js_sys::Date::now() {
                refresh += 1;
            }
        }
    });
    let (list, load_error): (Vec<Channel>, Option<String>) = match &*channels.read() {
        None => (Vec::new(), None),
        Some(Ok(data)) => (
            serde_json::from_value(data["alertChannels"].clone()).unwrap_or_default(),
            None,
        ),
        Some(Err(e)) => (Vec::new(), Some(e.message.clone())),
    };
    let (chats, hooks): (Vec<Channel>, Vec<Channel>) =
        list.into_iter().partition(|c| c.kind == "telegram");

    let chat_count = chats.len();
    let new_code = move |_| {
        chats_before.set(chat_count);
        spawn(async move {
            match gql(queries::CREATE_TELEGRAM_LINK_CODE, json!({})).await {
                Ok(data) => {
                    code_error.set(None);
                    code.set(Some(data["createTelegramLinkCode"].clone()));
                }
                Err(e) => code_error.set(Some(e)),
            }
        });
    };
    let add_webhook = move |e: FormEvent| {
        e.prevent_default();
        let target = url();
        spawn(async move {
            match gql(queries::CREATE_WEBHOOK, json!({ "url": target })).await {
                Ok(data) => {
                    let key = data["createWebhookChannel"]["secret"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    error.set(None);
                    secret.set(Some((target, key)));
                    url.set(String::new());
                    refresh += 1;
                    store.say("Webhook added");
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let shown_code = code.read().clone();

    rsx! {
        if let Some(message) = load_error {
            p { class: "form-error", role: "alert", "{message}" }
        }
        h3 { "Telegram" }
        if chats.is_empty() {
            p { class: "muted", "No chat linked yet." }
        }
        ul { id: "telegram-chats", class: "rows",
            for channel in chats {
                ChannelRow { key: "{channel.uuid}", channel }
            }
        }
        if let Some(e) = code_error() {
            p { class: "form-error", role: "alert", "{e.message}" }
        }
        if let Some(c) = shown_code {
            div { id: "telegram-link", class: "callout",
                p {
                    "Send this to the Pepeunit bot in Telegram (the code works once, until "
                    "{when(c[\"expiresAt\"].as_str().unwrap_or_default())}):"
                }
                p { code { id: "telegram-command", "/start {c[\"code\"].as_str().unwrap_or_default()}" } }
                if let Some(link) = c["deepLink"].as_str() {
                    p {
                        "Or open "
                        a { id: "telegram-deep-link", href: "{link}", target: "_blank", rel: "noopener noreferrer", "{link}" }
                        " and press Start."
                    }
                } else {
                    p { class: "muted", "The server does not know the bot's name yet (is a bot token set?): find the bot in Telegram and send the command." }
                }
            }
        }
        div { class: "actions",
            button { id: "telegram-link-code", r#type: "button", onclick: new_code,
                if code.read().is_some() { "New link code" } else { "Link a Telegram chat" }
            }
        }

        h3 { "Webhooks" }
        if hooks.is_empty() {
            p { class: "muted", "No webhooks." }
        }
        ul { id: "webhooks", class: "rows",
            for channel in hooks {
                ChannelRow { key: "{channel.uuid}", channel }
            }
        }
        if let Some((target, key)) = secret() {
            div { id: "webhook-secret", class: "callout", role: "status",
                p { "The signing secret of {target}. Copy it now: it is not shown again." }
                p { code { id: "webhook-secret-value", "{key}" } }
                p { class: "muted", "Each POST carries X-Pepeunit-Signature: sha256=<hex>, the HMAC-SHA256 of the body under this secret." }
                div { class: "actions",
                    button { r#type: "button", onclick: move |_| secret.set(None), "I have copied it" }
                }
            }
        }
        form { id: "webhook-form", onsubmit: add_webhook,
            FormError { error, fields: names(&["url"]) }
            TextField { label: "Webhook URL", name: "url", value: url, error, kind: "url", hint: "https://example.org/pepeunit-alerts" }
            div { class: "actions", button { class: "primary", r#type: "submit", "Add webhook" } }
        }
    }
}

/// A linked chat or a webhook: paused with its reason and Resume, and Remove.
#[component]
fn ChannelRow(channel: Channel) -> Element {
    let store = use_context::<Store>();
    let mut confirm_delete = use_signal(|| false);
    let run = move |query: &'static str, uuid: String, done: &'static str| {
        spawn(async move {
            let _ = act(store, query, json!({ "uuid": uuid }), done).await;
        });
    };
    let resume = {
        let uuid = channel.uuid.clone();
        move |_| {
            run(
                queries::RESUME_ALERT_CHANNEL,
                uuid.clone(),
                "Channel resumed",
            )
        }
    };
    let delete = {
        let uuid = channel.uuid.clone();
        move |_| {
            if !confirm_delete() {
                confirm_delete.set(true);
                return;
            }
            run(
                queries::DELETE_ALERT_CHANNEL,
                uuid.clone(),
                "Channel removed",
            );
        }
    };
    let reason = channel
        .paused_reason
        .clone()
        .unwrap_or_else(|| "too many failures".into());
    rsx! {
        li { class: "row channel", "data-kind": "{channel.kind}", "data-paused": "{channel.paused}",
            span { class: "row-text",
                "{channel.target()}"
                if channel.paused {
                    " · "
                    span { class: "field-error paused", "paused: {reason}" }
                } else if channel.failures > 0 {
                    span { class: "muted", " · {channel.failures} failed attempts, retrying" }
                }
            }
            if channel.paused {
                button { r#type: "button", onclick: resume, "Resume" }
            }
            button { r#type: "button", class: "danger", onclick: delete,
                if confirm_delete() { "Really remove?" } else { "Remove" }
            }
        }
    }
}
