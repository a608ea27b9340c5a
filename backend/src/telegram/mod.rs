//! The Telegram bot: a transport like GraphQL, calling the services and never called by them.
//!
//! It gets updates by long-polling `getUpdates` (teloxide's [`Bot`], pointed at `telegram_api_url` when
//! set) or, in webhook mode (`telegram_mode`; by default when `public_url` is https), from Telegram's
//! POSTs to [`WEBHOOK_PATH`], which [`Telegram::accept`] checks against the secret token given to
//! `setWebhook`. It answers the commands in [`commands`], and delivers alerts from the outbox as an
//! [`AlertTransport`]. Every message
//! leaves through one send queue that keeps Telegram's limits (one message a second per chat, about 30 a
//! second overall), waits out `429 retry_after` and retries server errors; an alert that still fails goes
//! back to the outbox, which retries it later, so none is dropped.

mod boards;
mod commands;
mod prompts;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use subtle::ConstantTimeEq;
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, CallbackQueryId, ChatId, ForceReply, InlineKeyboardMarkup,
    MaybeInaccessibleMessage, Message, MessageId, UpdateKind,
};
use teloxide::{ApiError, RequestError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{Config, TelegramMode};
use crate::entities::{alert_channels, alerts};
use crate::services::Services;
use crate::services::alerts::deliver::{AlertTransport, DeliveryError};

/// Seconds a `getUpdates` call waits for updates; below the HTTP client's 17 s timeout.
const POLL_SECONDS: u32 = 10;
/// The gap between two messages to one chat.
const PER_CHAT: Duration = Duration::from_secs(1);
/// The gap between any two messages: 30 a second.
const OVERALL: Duration = Duration::from_millis(34);
/// Attempts at one message before an alert goes back to the outbox.
const ATTEMPTS: u32 = 4;
/// Most characters of one message (Telegram's limit is 4096).
const MAX_TEXT: usize = 4000;
/// Messages waiting in the send queue before senders wait for room.
const QUEUE: usize = 4096;
/// Where Telegram POSTs updates in webhook mode, under `public_url`.
pub const WEBHOOK_PATH: &str = "/api/v1/telegram/webhook";
/// The header carrying the secret token given to `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Updates received by the webhook and not yet handled; past it Telegram is told to retry later.
const WEBHOOK_QUEUE: usize = 256;

/// How updates arrive.
enum Mode {
    Polling,
    /// Telegram POSTs them to `url` with `secret` in [`SECRET_HEADER`].
    Webhook {
        url: reqwest::Url,
        secret: String,
    },
}

/// Why a POST to the webhook was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookRefusal {
    /// The bot is not in webhook mode.
    NotWebhook,
    /// The secret token is missing or wrong.
    Secret,
    /// The body is not an update.
    Body,
    /// Too many updates are waiting: Telegram retries later.
    Busy,
}

/// A message to send (or one of ours to edit), and who waits for the outcome.
struct Outgoing {
    chat: i64,
    text: String,
    keyboard: Option<InlineKeyboardMarkup>,
    /// Edit this message instead of sending a new one.
    edit: Option<i32>,
    /// A value prompt: sent with `ForceReply`, and waiting for its reply once sent.
    prompt: Option<prompts::Prompt>,
    done: Option<oneshot::Sender<Result<(), DeliveryError>>>,
}

/// A bot answer: text, and buttons under it.
pub(crate) struct Answer {
    pub text: String,
    pub keyboard: Option<InlineKeyboardMarkup>,
}

impl From<String> for Answer {
    fn from(text: String) -> Self {
        Self {
            text,
            keyboard: None,
        }
    }
}

/// The running bot; cheap to share.
pub struct Telegram {
    bot: Bot,
    token: String,
    queue: mpsc::Sender<Outgoing>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Outgoing>>>,
    prompts: prompts::Prompts,
    mode: Mode,
    updates: mpsc::Sender<Update>,
    update_receiver: std::sync::Mutex<Option<mpsc::Receiver<Update>>>,
}

/// The bot could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Telegram bot: {0}")]
pub struct TelegramError(String);

impl Telegram {
    /// The bot of `telegram_bot_token`, if one is configured.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Self>>, TelegramError> {
        let Some(token) = &config.telegram_bot_token else {
            return Ok(None);
        };
        let client = teloxide::net::default_reqwest_settings()
            .build()
            .map_err(|e| TelegramError(e.to_string()))?;
        let mut bot = Bot::with_client(token.expose(), client);
        if let Some(url) = &config.telegram_api_url {
            let url = reqwest::Url::parse(url).map_err(|e| TelegramError(e.to_string()))?;
            bot = bot.set_api_url(url);
        }
        let https = reqwest::Url::parse(&config.public_url).is_ok_and(|u| u.scheme() == "https");
        let webhook = match config.telegram_mode {
            TelegramMode::Auto => https,
            TelegramMode::Polling => false,
            TelegramMode::Webhook => true,
        };
        let mode = if webhook {
            let base = config.public_url.trim_end_matches('/');
            let url = reqwest::Url::parse(&format!("{base}{WEBHOOK_PATH}"))
                .map_err(|e| TelegramError(format!("public_url: {e}")))?;
            // A new secret at every start: the one of an earlier run stops working with its setWebhook.
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            Mode::Webhook {
                url,
                secret: hex::encode(bytes),
            }
        } else {
            Mode::Polling
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (updates, update_receiver) = mpsc::channel(WEBHOOK_QUEUE);
        Ok(Some(Arc::new(Self {
            bot,
            token: token.expose().to_owned(),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
            prompts: prompts::Prompts::default(),
            mode,
            updates,
            update_receiver: std::sync::Mutex::new(Some(update_receiver)),
        })))
    }

    /// Starts polling and the send queue; they run until the returned tasks are aborted.
    pub fn start(self: &Arc<Self>, services: Services) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(receiver) = receiver {
            tasks.push(tokio::spawn(self.clone().run_queue(receiver)));
        }
        match &self.mode {
            Mode::Polling => tasks.push(tokio::spawn(self.clone().poll(services))),
            Mode::Webhook { .. } => {
                tasks.push(tokio::spawn(self.clone().register(services.clone())));
                let receiver = self
                    .update_receiver
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(receiver) = receiver {
                    tasks.push(tokio::spawn(self.clone().run_updates(services, receiver)));
                }
            }
        }
        tasks
    }

    /// Takes an update POSTed to the webhook if it carries the secret token; it is handled in order,
    /// after the answer (Telegram waits for the answer before it sends the next update).
    pub fn accept(&self, secret: Option<&[u8]>, body: &[u8]) -> Result<(), WebhookRefusal> {
        let Mode::Webhook {
            secret: expected, ..
        } = &self.mode
        else {
            return Err(WebhookRefusal::NotWebhook);
        };
        if !secret.is_some_and(|given| bool::from(given.ct_eq(expected.as_bytes()))) {
            return Err(WebhookRefusal::Secret);
        }
        let update: Update = serde_json::from_slice(body).map_err(|_| WebhookRefusal::Body)?;
        self.updates
            .try_send(update)
            .map_err(|_| WebhookRefusal::Busy)
    }

    /// Learns the bot's username, for deep links.
    async fn learn_name(&self, services: &Services) {
        match self.bot.get_me().await {
            Ok(me) => {
                if let Some(username) = me.user.username.clone() {
                    let _ = services.alerts().settings().bot_username.set(username);
                }
            }
            Err(error) => tracing::warn!(error = %self.redact(&error), "telegram getMe failed"),
        }
    }

    /// Webhook mode: `setWebhook` with our URL and secret token, retried until Telegram takes it.
    async fn register(self: Arc<Self>, services: Services) {
        let Mode::Webhook { url, secret } = &self.mode else {
            return;
        };
        self.learn_name(&services).await;
        let mut backoff = Duration::from_secs(1);
        loop {
            let set = self
                .bot
                .set_webhook(url.clone())
                .secret_token(secret.clone())
                .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
                .await;
            match set {
                Ok(_) => {
                    tracing::info!(%url, "telegram webhook set");
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %self.redact(&error), "telegram setWebhook failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Handles the webhook's updates one by one, in the order they came.
    async fn run_updates(
        self: Arc<Self>,
        services: Services,
        mut receiver: mpsc::Receiver<Update>,
    ) {
        while let Some(update) = receiver.recv().await {
            self.handle(&services, update.kind).await;
        }
    }

    /// An error's text without the bot token (reqwest errors name the URL, which carries it).
    fn redact(&self, error: &RequestError) -> String {
        error.to_string().replace(&self.token, "<token>")
    }

    /// Queues a message; waits only while the queue is full.
    async fn send(&self, chat: i64, text: String) -> Result<(), DeliveryError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Outgoing {
                chat,
                text,
                keyboard: None,
                edit: None,
                prompt: None,
                done: Some(done),
            })
            .await
            .map_err(|_| DeliveryError::Unavailable)?;
        outcome.await.unwrap_or(Err(DeliveryError::Unavailable))
    }

    /// Queues a reply (or, with `edit`, a new version of one of our messages); its outcome is only
    /// logged.
    async fn reply(&self, chat: i64, answer: Answer, edit: Option<i32>) {
        let _ = self
            .queue
            .send(Outgoing {
                chat,
                text: answer.text,
                keyboard: answer.keyboard,
                edit,
                prompt: None,
                done: None,
            })
            .await;
    }

    /// Queues a value prompt for the item of `prompt`; it waits for its reply once sent.
    async fn ask(&self, chat: i64, prompt: prompts::Prompt) {
        let minutes = prompts::TTL.as_secs() / 60;
        let text = format!(
            "{} {} as a reply to this message (within {minutes} minutes).",
            prompts::PREFIX,
            prompt.label
        );
        let _ = self
            .queue
            .send(Outgoing {
                chat,
                text,
                keyboard: None,
                edit: None,
                prompt: Some(prompt),
                done: None,
            })
            .await;
    }

    /// Answers a reply to one of the bot's messages if it is a value prompt's; whether it was.
    async fn answer_reply(
        &self,
        services: &Services,
        chat: i64,
        from: i64,
        original: &Message,
        text: &str,
    ) -> bool {
        let ours = original.from.as_ref().is_some_and(|user| user.is_bot)
            && original
                .text()
                .is_some_and(|t| t.starts_with(prompts::PREFIX));
        match self.prompts.take(chat, original.id.0, from) {
            prompts::Reply::Answer(prompt) => {
                let answer = boards::answer_prompt(services, from, &prompt, text.trim()).await;
                self.reply(chat, answer.into(), None).await;
                if let Some(message) = prompt.board_message
                    && let Some(view) = boards::fresh_view(services, prompt.board).await
                {
                    self.reply(chat, view, Some(message)).await;
                }
                true
            }
            prompts::Reply::NotYours => {
                self.reply(
                    chat,
                    "This question is for whoever pressed the button."
                        .to_owned()
                        .into(),
                    None,
                )
                .await;
                true
            }
            prompts::Reply::Unknown if ours => {
                self.reply(
                    chat,
                    "This question has expired or was answered: press the button again."
                        .to_owned()
                        .into(),
                    None,
                )
                .await;
                true
            }
            prompts::Reply::Unknown => false,
        }
    }

    async fn poll(self: Arc<Self>, services: Services) {
        self.learn_name(&services).await;
        // A webhook left by an earlier run in webhook mode makes getUpdates fail: going back to polling
        // removes it (pending updates are kept and polled).
        if let Err(error) = self.bot.delete_webhook().await {
            tracing::warn!(error = %self.redact(&error), "telegram deleteWebhook failed");
        }
        let mut offset: i32 = 0;
        let mut backoff = Duration::from_secs(1);
        loop {
            let updates = self
                .bot
                .get_updates()
                .offset(offset)
                .timeout(POLL_SECONDS)
                .await;
            match updates {
                Ok(updates) => {
                    backoff = Duration::from_secs(1);
                    for update in updates {
                        offset = i32::try_from(update.id.0)
                            .unwrap_or(i32::MAX)
                            .saturating_add(1);
                        self.handle(&services, update.kind).await;
                    }
                }
                Err(RequestError::RetryAfter(wait)) => tokio::time::sleep(wait.duration()).await,
                Err(error) => {
                    tracing::warn!(error = %self.redact(&error), "telegram getUpdates failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn handle(&self, services: &Services, update: UpdateKind) {
        match update {
            UpdateKind::Message(message) => {
                let Some(text) = message.text() else {
                    return;
                };
                let chat = message.chat.id.0;
                let from = message
                    .from
                    .as_ref()
                    .and_then(|user| i64::try_from(user.id.0).ok())
                    .unwrap_or(chat);
                if let Some(original) = message.reply_to_message()
                    && !text.starts_with('/')
                    && self
                        .answer_reply(services, chat, from, original, text)
                        .await
                {
                    return;
                }
                let answer = commands::handle(services, chat, from, text).await;
                self.reply(chat, answer, None).await;
            }
            UpdateKind::CallbackQuery(query) => {
                let Some(data) = query.data.as_deref() else {
                    return;
                };
                // The message the buttons are under; in a private chat its chat id is the user's id.
                let (chat, message) = match &query.message {
                    Some(MaybeInaccessibleMessage::Regular(message)) => {
                        (message.chat.id.0, Some(message.id.0))
                    }
                    Some(other) => (other.chat().id.0, None),
                    None => (i64::try_from(query.from.id.0).unwrap_or_default(), None),
                };
                let presser = i64::try_from(query.from.id.0).unwrap_or_default();
                let outcome = boards::callback(services, presser, data).await;
                let mut answer = self
                    .bot
                    .answer_callback_query(CallbackQueryId(query.id.0.clone()))
                    .text(outcome.notice.clone());
                if outcome.refused {
                    answer = answer.show_alert(true);
                }
                if let Err(error) = answer.await {
                    tracing::info!(error = %self.redact(&error), "telegram answerCallbackQuery failed");
                }
                if let Some((board, item, label)) = outcome.prompt {
                    let prompt = prompts::Prompt {
                        board,
                        item,
                        from: presser,
                        label,
                        board_message: message,
                    };
                    self.ask(chat, prompt).await;
                }
                if let Some(board) = outcome.board {
                    // A fresh view of the board: over the pressed message, or as a new one.
                    let edit = if outcome.new_message { None } else { message };
                    self.reply(chat, board, edit).await;
                }
            }
            _ => {}
        }
    }

    /// Sends queued messages within Telegram's limits, chats in turn.
    async fn run_queue(self: Arc<Self>, mut receiver: mpsc::Receiver<Outgoing>) {
        let mut waiting: HashMap<i64, VecDeque<Outgoing>> = HashMap::new();
        let mut turns: VecDeque<i64> = VecDeque::new();
        let mut next_for_chat: HashMap<i64, Instant> = HashMap::new();
        let mut next_any = Instant::now();
        loop {
            while let Ok(message) = receiver.try_recv() {
                push(&mut waiting, &mut turns, message);
            }
            let now = Instant::now();
            let ready = turns
                .iter()
                .position(|chat| next_for_chat.get(chat).is_none_or(|at| *at <= now));
            let Some(index) = ready.filter(|_| next_any <= now) else {
                // Nothing may go yet: wait for the earliest slot or a new message.
                let earliest = turns
                    .iter()
                    .filter_map(|chat| next_for_chat.get(chat).copied())
                    .min()
                    .unwrap_or(now)
                    .max(next_any);
                let sleep = if turns.is_empty() {
                    None
                } else {
                    Some(tokio::time::sleep_until(earliest))
                };
                tokio::select! {
                    message = receiver.recv() => match message {
                        Some(message) => push(&mut waiting, &mut turns, message),
                        None if turns.is_empty() => return,
                        None => {}
                    },
                    () = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {}
                }
                continue;
            };
            let Some(chat) = turns.remove(index) else {
                continue;
            };
            let Some(mut message) = waiting.get_mut(&chat).and_then(VecDeque::pop_front) else {
                continue;
            };
            let outcome = self.deliver_one(&message).await;
            if let Ok(Some(id)) = outcome
                && let Some(prompt) = message.prompt.take()
            {
                self.prompts.insert(chat, id, prompt);
            }
            let outcome = outcome.map(|_| ());
            if let Err(error) = &outcome
                && message.done.is_none()
            {
                tracing::warn!(chat, ?error, "telegram reply not sent");
            }
            if let Some(done) = message.done {
                let _ = done.send(outcome);
            }
            let sent = Instant::now();
            next_for_chat.insert(chat, sent + PER_CHAT);
            next_any = sent + OVERALL;
            if waiting.get(&chat).is_some_and(|q| !q.is_empty()) {
                turns.push_back(chat);
            } else {
                waiting.remove(&chat);
            }
            next_for_chat.retain(|_, at| *at > sent);
        }
    }

    /// Sends one message, waiting out `retry_after` and retrying server and network errors a few times;
    /// the id of the message sent or edited.
    async fn deliver_one(&self, message: &Outgoing) -> Result<Option<i32>, DeliveryError> {
        let chat = message.chat;
        let text: String = message.text.chars().take(MAX_TEXT).collect();
        let mut last = String::new();
        let mut attempt = 0;
        while attempt < ATTEMPTS {
            let sent = match message.edit {
                Some(id) => {
                    let mut request =
                        self.bot
                            .edit_message_text(ChatId(chat), MessageId(id), text.clone());
                    if let Some(keyboard) = &message.keyboard {
                        request = request.reply_markup(keyboard.clone());
                    }
                    request.await.map(|m| Some(m.id.0))
                }
                None => {
                    let mut request = self.bot.send_message(ChatId(chat), text.clone());
                    if let Some(keyboard) = &message.keyboard {
                        request = request.reply_markup(keyboard.clone());
                    }
                    if let Some(prompt) = &message.prompt {
                        let placeholder: String = prompt.label.chars().take(64).collect();
                        request = request
                            .reply_markup(ForceReply::new().input_field_placeholder(placeholder));
                    }
                    request.await.map(|m| Some(m.id.0))
                }
            };
            match sent {
                Ok(id) => return Ok(id),
                Err(RequestError::Api(ApiError::MessageNotModified)) => return Ok(None),
                Err(RequestError::RetryAfter(wait)) => {
                    // Flood control: not a failure of this message; wait as told, then try again.
                    tracing::info!(chat, seconds = wait.seconds(), "telegram asked to wait");
                    tokio::time::sleep(wait.duration().max(Duration::from_secs(1))).await;
                    last = "Telegram asked to retry later".into();
                    attempt += 1;
                }
                Err(RequestError::Api(
                    error @ (ApiError::BotBlocked
                    | ApiError::ChatNotFound
                    | ApiError::UserDeactivated
                    | ApiError::BotKicked
                    | ApiError::BotKickedFromSupergroup
                    | ApiError::CantInitiateConversation),
                )) => {
                    return Err(DeliveryError::Permanent(format!(
                        "Telegram refused the chat: {error}"
                    )));
                }
                Err(error) => {
                    last = self.redact(&error);
                    tracing::info!(chat, error = %last, "telegram sendMessage failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1 << attempt.min(5))).await;
                }
            }
        }
        Err(DeliveryError::Retry(last))
    }
}

/// Queues `message` behind its chat's earlier ones; a chat with nothing waiting gets a turn.
/// Repeated edits of one message that are still waiting are coalesced: only the newest is sent.
fn push(
    waiting: &mut HashMap<i64, VecDeque<Outgoing>>,
    turns: &mut VecDeque<i64>,
    message: Outgoing,
) {
    let queue = waiting.entry(message.chat).or_default();
    if message.edit.is_some()
        && let Some(older) = queue
            .iter_mut()
            .find(|m| m.edit == message.edit && m.done.is_none())
    {
        older.text = message.text;
        older.keyboard = message.keyboard;
        return;
    }
    if queue.is_empty() {
        turns.push_back(message.chat);
    }
    queue.push_back(message);
}

impl AlertTransport for Telegram {
    fn deliver<'a>(
        &'a self,
        _services: &'a Services,
        channel: &'a alert_channels::Model,
        alert: &'a alerts::Model,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let chat = channel
                .telegram_chat_id
                .ok_or_else(|| DeliveryError::Permanent("the channel has no chat".into()))?;
            self.send(chat, alert.message.clone()).await
        })
    }
}
