//! A stub of the Telegram Bot API (the one fake the tests allow): a small HTTP server on loopback that
//! speaks the methods the bot uses (`getMe`, `getUpdates`, `sendMessage`, `editMessageText`,
//! `answerCallbackQuery`, `setWebhook`, `deleteWebhook`) as Telegram does (`getUpdates` is refused with
//! 409 while a webhook is set), queues the updates a test makes users send, records every
//! request (each message with when it arrived), and can answer the next `sendMessage` calls with a 429 `retry_after` or a 500.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const TOKEN: &str = "123456:TEST-token";

/// How the stub answers the next `sendMessage`.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// 429 with `retry_after` seconds.
    RetryAfter(u32),
    /// 500 Internal Server Error.
    ServerError,
    /// 403: the user blocked the bot.
    Blocked,
}

/// A message the bot sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat: i64,
    pub id: u64,
    pub text: String,
    pub keyboard: Value,
    /// When the stub answered it.
    pub at: Instant,
}

impl Sent {
    /// The callback data of the button whose text contains `label`.
    pub fn button(&self, label: &str) -> String {
        self.keyboard["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .find(|b| b["text"].as_str().is_some_and(|t| t.contains(label)))
            .and_then(|b| b["callback_data"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no button {label} in {}", self.keyboard))
    }
}

#[derive(Default)]
struct Inner {
    updates: Vec<Value>,
    next_update: u64,
    next_message: u64,
    /// Every request: method and JSON body.
    requests: Vec<(String, Value)>,
    /// Messages answered with success: chat and text.
    sent: Vec<(i64, String)>,
    /// The same with their ids and buttons.
    messages: Vec<Sent>,
    /// Successful edits: chat, message id, new text.
    edits: Vec<(i64, u64, String)>,
    failures: std::collections::VecDeque<Failure>,
    /// The webhook set by `setWebhook`: URL and secret token.
    webhook: Option<(String, String)>,
}

#[derive(Clone, Default)]
struct Stub {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

/// The running stub.
pub struct TelegramStub {
    pub url: String,
    stub: Stub,
}

fn ok(result: Value) -> Response {
    axum::Json(json!({ "ok": true, "result": result })).into_response()
}

fn chat_json(id: i64) -> Value {
    json!({ "id": id, "type": "private", "first_name": "Tester" })
}

/// The text fields of a `multipart/form-data` body (teloxide sends methods that may carry a file, such as
/// `setWebhook`, that way) as a JSON object.
fn form_fields(content_type: &str, body: &[u8]) -> Value {
    let Some(boundary) = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
    else {
        return Value::Null;
    };
    let boundary = format!("--{}", boundary.trim_matches('"'));
    let body = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    for part in body.split(boundary.as_str()) {
        let Some((headers, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = headers
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Value::Object(fields)
}

async fn method(
    State(stub): State<Stub>,
    Path((bot, method)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if bot != format!("bot{TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "ok": false, "error_code": 401, "description": "Unauthorized" })),
        )
            .into_response();
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body: Value = if content_type.starts_with("multipart/form-data") {
        form_fields(content_type, &body)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    // Telegram's method names are case-insensitive (teloxide sends `SendMessage`).
    let method = match method.to_ascii_lowercase().as_str() {
        "getme" => "getMe",
        "getupdates" => "getUpdates",
        "sendmessage" => "sendMessage",
        "editmessagetext" => "editMessageText",
        "answercallbackquery" => "answerCallbackQuery",
        "setwebhook" => "setWebhook",
        "deletewebhook" => "deleteWebhook",
        _ => "unknown",
    }
    .to_owned();
    stub.inner
        .lock()
        .unwrap()
        .requests
        .push((method.clone(), body.clone()));
    match method.as_str() {
        "getMe" => ok(json!({
            "id": 123456, "is_bot": true, "first_name": "Pepeunit", "username": "pepeunit_test_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false, "has_main_web_app": false
        })),
        "setWebhook" => {
            let url = body["url"].as_str().unwrap_or_default().to_owned();
            let secret = body["secret_token"].as_str().unwrap_or_default().to_owned();
            stub.inner.lock().unwrap().webhook = Some((url, secret));
            ok(json!(true))
        }
        "deleteWebhook" => {
            stub.inner.lock().unwrap().webhook = None;
            ok(json!(true))
        }
        "getUpdates" if stub.inner.lock().unwrap().webhook.is_some() => (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "ok": false, "error_code": 409,
                "description": "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
            })),
        )
            .into_response(),
        "getUpdates" => {
            let offset = body["offset"].as_u64().unwrap_or(0);
            let wait = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(2));
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let notified = stub.notify.notified();
                {
                    let mut inner = stub.inner.lock().unwrap();
                    inner
                        .updates
                        .retain(|u| u["update_id"].as_u64().unwrap_or(0) >= offset);
                    if !inner.updates.is_empty() || tokio::time::Instant::now() >= deadline {
                        return ok(Value::Array(inner.updates.clone()));
                    }
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
        }
        "sendMessage" | "editMessageText" => {
            let mut inner = stub.inner.lock().unwrap();
            if method == "sendMessage"
                && let Some(failure) = inner.failures.pop_front()
            {
                return match failure {
                    Failure::RetryAfter(seconds) => (
                        StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(json!({
                            "ok": false, "error_code": 429,
                            "description": format!("Too Many Requests: retry after {seconds}"),
                            "parameters": { "retry_after": seconds }
                        })),
                    )
                        .into_response(),
                    Failure::Blocked => (
                        StatusCode::FORBIDDEN,
                        axum::Json(json!({
                            "ok": false, "error_code": 403,
                            "description": "Forbidden: bot was blocked by the user"
                        })),
                    )
                        .into_response(),
                    Failure::ServerError => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({
                            "ok": false, "error_code": 500, "description": "Internal Server Error"
                        })),
                    )
                        .into_response(),
                };
            }
            let chat_id = body["chat_id"].as_i64().unwrap_or_default();
            let text = body["text"].as_str().unwrap_or_default().to_owned();
            if method == "editMessageText" {
                let id = body["message_id"].as_u64().unwrap_or_default();
                inner.edits.push((chat_id, id, text.clone()));
                return ok(json!({
                    "message_id": id, "date": 1_700_000_000, "chat": chat_json(chat_id), "text": text
                }));
            }
            inner.next_message += 1;
            let id = inner.next_message;
            inner.sent.push((chat_id, text.clone()));
            inner.messages.push(Sent {
                chat: chat_id,
                id,
                text: text.clone(),
                keyboard: body["reply_markup"].clone(),
                at: Instant::now(),
            });
            ok(json!({
                "message_id": id, "date": 1_700_000_000, "chat": chat_json(chat_id), "text": text
            }))
        }
        "answerCallbackQuery" => ok(json!(true)),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "ok": false, "error_code": 404, "description": "Not Found: method not found" })),
        )
            .into_response(),
    }
}

impl TelegramStub {
    pub async fn start() -> Self {
        let stub = Stub::default();
        let app = Router::new()
            .route("/{bot}/{method}", post(method))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, stub }
    }

    /// The webhook `setWebhook` set (URL and secret token), if one is set.
    pub fn webhook(&self) -> Option<(String, String)> {
        self.stub.inner.lock().unwrap().webhook.clone()
    }

    /// A webhook is set, as an earlier run in webhook mode leaves it.
    pub fn set_webhook(&self, url: &str) {
        self.stub.inner.lock().unwrap().webhook = Some((url.to_owned(), "old".to_owned()));
    }

    /// An update as Telegram sends it: user `chat` sends `text` in their private chat.
    pub fn update_json(&self, chat: i64, text: &str) -> Value {
        let mut inner = self.stub.inner.lock().unwrap();
        inner.next_update += 1;
        inner.next_message += 1;
        json!({
            "update_id": inner.next_update,
            "message": {
                "message_id": inner.next_message,
                "date": 1_700_000_000,
                "chat": chat_json(chat),
                "from": { "id": chat, "is_bot": false, "first_name": "Tester" },
                "text": text
            }
        })
    }

    /// A user in chat `chat` sends `text` to the bot.
    pub fn say(&self, chat: i64, text: &str) {
        let mut inner = self.stub.inner.lock().unwrap();
        inner.next_update += 1;
        let id = inner.next_update;
        inner.next_message += 1;
        let message = inner.next_message;
        inner.updates.push(json!({
            "update_id": id,
            "message": {
                "message_id": message,
                "date": 1_700_000_000,
                "chat": chat_json(chat),
                "from": { "id": chat, "is_bot": false, "first_name": "Tester" },
                "text": text
            }
        }));
        drop(inner);
        self.stub.notify.notify_waiters();
    }

    /// A user `from` in chat `chat` replies `text` to the bot's message `to` (as a `ForceReply` prompt
    /// makes their client do), which carried `original`.
    pub fn reply(&self, chat: i64, from: i64, to: u64, original: &str, text: &str) {
        let mut inner = self.stub.inner.lock().unwrap();
        inner.next_update += 1;
        let id = inner.next_update;
        inner.next_message += 1;
        let message = inner.next_message;
        inner.updates.push(json!({
            "update_id": id,
            "message": {
                "message_id": message,
                "date": 1_700_000_000,
                "chat": chat_json(chat),
                "from": { "id": from, "is_bot": false, "first_name": "Tester" },
                "text": text,
                "reply_to_message": {
                    "message_id": to,
                    "date": 1_700_000_000,
                    "chat": chat_json(chat),
                    "from": { "id": 123456, "is_bot": true, "first_name": "Pepeunit", "username": "pepeunit_test_bot" },
                    "text": original
                }
            }
        }));
        drop(inner);
        self.stub.notify.notify_waiters();
    }

    /// A user `from` presses a button with `data` under message `message` in chat `chat`.
    pub fn press(&self, chat: i64, from: i64, message: u64, data: &str) {
        let mut inner = self.stub.inner.lock().unwrap();
        inner.next_update += 1;
        let id = inner.next_update;
        inner.updates.push(json!({
            "update_id": id,
            "callback_query": {
                "id": format!("cb{id}"),
                "from": { "id": from, "is_bot": false, "first_name": "Presser" },
                "chat_instance": "stub",
                "data": data,
                "message": {
                    "message_id": message,
                    "date": 1_700_000_000,
                    "chat": chat_json(chat),
                    "text": "board"
                }
            }
        }));
        drop(inner);
        self.stub.notify.notify_waiters();
    }

    /// Messages sent to `chat`, with ids and buttons.
    pub fn messages(&self, chat: i64) -> Vec<Sent> {
        self.stub
            .inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.chat == chat)
            .cloned()
            .collect()
    }

    /// Texts of the edits of message `id` in `chat`, in order.
    pub fn edits(&self, chat: i64, id: u64) -> Vec<String> {
        self.stub
            .inner
            .lock()
            .unwrap()
            .edits
            .iter()
            .filter(|(c, m, _)| *c == chat && *m == id)
            .map(|(_, _, text)| text.clone())
            .collect()
    }

    /// The texts of `answerCallbackQuery` calls, in order.
    pub fn callback_answers(&self) -> Vec<String> {
        self.stub
            .inner
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, _)| m == "answerCallbackQuery")
            .map(|(_, body)| body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits (up to a minute) for `check` to return something.
    pub async fn until<T>(&self, what: &str, check: impl Fn(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next `sendMessage` calls fail like this, in order.
    pub fn fail_next(&self, failures: &[Failure]) {
        self.stub
            .inner
            .lock()
            .unwrap()
            .failures
            .extend(failures.iter().copied());
    }

    /// Texts delivered to `chat`, in order.
    pub fn sent(&self, chat: i64) -> Vec<String> {
        self.stub
            .inner
            .lock()
            .unwrap()
            .sent
            .iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// How many `sendMessage` requests (answered or failed) carried a text containing `needle`.
    pub fn attempts(&self, needle: &str) -> usize {
        self.stub
            .inner
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, body)| {
                m == "sendMessage" && body["text"].as_str().is_some_and(|t| t.contains(needle))
            })
            .count()
    }

    /// Forgets the failures still queued by [`TelegramStub::fail_next`].
    pub fn heal(&self) {
        self.stub.inner.lock().unwrap().failures.clear();
    }

    /// How many requests of `method` arrived.
    pub fn calls(&self, method: &str) -> usize {
        self.stub
            .inner
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, _)| m == method)
            .count()
    }

    /// Waits (up to a minute) until `chat` has a delivered message matching `pred` after the first
    /// `skip`; returns it.
    pub async fn wait_for(&self, chat: i64, skip: usize, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(text) = self.sent(chat).into_iter().skip(skip).find(|t| pred(t)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no matching message for chat {chat}; got {:?}",
                self.sent(chat)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `text` from `chat` and waits for the bot's next message there.
    pub async fn ask(&self, chat: i64, text: &str) -> String {
        let before = self.sent(chat).len();
        self.say(chat, text);
        self.wait_for(chat, before, |_| true).await
    }
}
