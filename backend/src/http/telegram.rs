//! The Telegram bot's webhook: Telegram POSTs updates here in webhook mode, with the secret token the bot
//! gave `setWebhook` in `X-Telegram-Bot-Api-Secret-Token`; anything else is refused.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::AppState;
use crate::telegram::{SECRET_HEADER, WebhookRefusal};

pub(super) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(bot) = &state.telegram else {
        return StatusCode::NOT_FOUND;
    };
    let secret = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
    match bot.accept(secret, &body) {
        Ok(()) => StatusCode::OK,
        Err(WebhookRefusal::NotWebhook) => StatusCode::NOT_FOUND,
        Err(WebhookRefusal::Secret) => StatusCode::UNAUTHORIZED,
        Err(WebhookRefusal::Body) => StatusCode::BAD_REQUEST,
        Err(WebhookRefusal::Busy) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
