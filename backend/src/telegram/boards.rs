//! Boards in Telegram: a message listing the outputs' values with the inputs as inline buttons.
//!
//! Callback data (at most 64 bytes) is `<action>:<board uuid, 32 hex>[:<item id>]`: `o` opens a board,
//! `r` refreshes it, `p` presses an input's button, `a` asks for a value (see [`super::prompts`]). A press runs as the Telegram user
//! who pressed (their linked account), and the message is then edited with fresh values as the board's
//! owner sees them.

use sea_orm::EntityTrait;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup};
use uuid::Uuid;

use super::Answer;
use crate::entities::boards as board_rows;
use crate::error::Error;
use crate::services::boards::{self, ShownItem};
use crate::services::{Actor, Services, alerts};

/// What a button press leads to.
pub(crate) struct Outcome {
    /// The short notice Telegram shows the presser.
    pub notice: String,
    /// Show the notice as an alert the presser must dismiss.
    pub refused: bool,
    /// A fresh view of the board.
    pub board: Option<Answer>,
    /// Send the view as a new message rather than edit the pressed one.
    pub new_message: bool,
    /// Ask the presser for a value of this item: (board, item, label).
    pub prompt: Option<(Uuid, i64, String)>,
}

impl Outcome {
    fn refused(notice: impl Into<String>) -> Self {
        Self {
            notice: notice.into(),
            refused: true,
            board: None,
            new_message: false,
            prompt: None,
        }
    }
}

fn data(action: &str, board: Uuid, item: Option<i64>) -> String {
    match item {
        Some(item) => format!("{action}:{}:{item}", board.simple()),
        None => format!("{action}:{}", board.simple()),
    }
}

/// The board as text (every item with its current value) and its buttons.
fn render(board: &board_rows::Model, items: &[ShownItem]) -> Answer {
    let mut text = format!("📋 {}\n", board.name);
    let mut rows = Vec::new();
    for shown in items {
        let label = shown.label();
        let value = shown.node.last_value.as_deref().unwrap_or("—");
        text.push_str(&format!("• {label}: {value}\n"));
        if shown.is_input() {
            let button = match &shown.item.value {
                Some(preset) => InlineKeyboardButton::callback(
                    format!("{label} → {preset}"),
                    data("p", board.uuid, Some(shown.item.id)),
                ),
                None => InlineKeyboardButton::callback(
                    format!("{label}: set…"),
                    data("a", board.uuid, Some(shown.item.id)),
                ),
            };
            rows.push(vec![button]);
        }
    }
    rows.push(vec![InlineKeyboardButton::callback(
        "🔄 Refresh",
        data("r", board.uuid, None),
    )]);
    Answer {
        text,
        keyboard: Some(InlineKeyboardMarkup::new(rows)),
    }
}

/// `/boards`: the user's boards, each a button that opens it.
pub(crate) async fn list(services: &Services, actor: &Actor) -> Result<Answer, Error> {
    let rows = boards::list(services, actor).await?;
    if rows.is_empty() {
        return Ok(
            "You have no boards; compose one in the web app (createBoard)."
                .to_owned()
                .into(),
        );
    }
    let buttons = rows
        .iter()
        .map(|b| {
            vec![InlineKeyboardButton::callback(
                format!("📋 {}", b.name),
                data("o", b.uuid, None),
            )]
        })
        .collect::<Vec<_>>();
    Ok(Answer {
        text: "Your boards:".to_owned(),
        keyboard: Some(InlineKeyboardMarkup::new(buttons)),
    })
}

/// The board as its owner sees it now.
async fn owner_view(services: &Services, board: Uuid) -> Result<Answer, Error> {
    let row = board_rows::Entity::find_by_id(board)
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("board"))?;
    let (owner, _) = alerts::user_actor(services, row.user_uuid)
        .await?
        .ok_or(Error::NotFound("board"))?;
    let (row, items) = boards::show(services, &owner, board).await?;
    Ok(render(&row, &items))
}

/// Sets the input of a prompted item to the reply `value` of the Telegram user `from`; the answer to show.
pub(crate) async fn answer_prompt(
    services: &Services,
    from: i64,
    prompt: &super::prompts::Prompt,
    value: &str,
) -> String {
    let actor = match alerts::chat_actor(services, from).await {
        Ok(Some((actor, _))) => actor,
        Ok(None) => {
            return "Link your Telegram account to Pepeunit first: send me /start <code>."
                .to_owned();
        }
        Err(error) => return error.public_message(),
    };
    match boards::set_value(services, &actor, prompt.board, prompt.item, value).await {
        Ok(_) => format!("{} set to {value}.", prompt.label),
        Err(Error::Forbidden(_) | Error::Unauthenticated) => {
            format!("You may not set {}.", prompt.label)
        }
        Err(error) => format!("{} was not set: {}", prompt.label, error.public_message()),
    }
}

/// The board as its owner sees it now, for the message to edit after a prompted value was set.
pub(crate) async fn fresh_view(services: &Services, board: Uuid) -> Option<Answer> {
    owner_view(services, board).await.ok()
}

/// Handles a button press by the Telegram user `presser`.
pub(crate) async fn callback(services: &Services, presser: i64, data: &str) -> Outcome {
    let mut parts = data.split(':');
    let (Some(action), Some(board)) = (parts.next(), parts.next()) else {
        return Outcome::refused("This button is not known.");
    };
    let Ok(board) = Uuid::parse_str(board) else {
        return Outcome::refused("This button is not known.");
    };
    let item = parts.next().and_then(|i| i.parse::<i64>().ok());
    let actor = match alerts::chat_actor(services, presser).await {
        Ok(Some((actor, _))) => actor,
        Ok(None) => {
            return Outcome::refused(
                "Link your Telegram account to Pepeunit first: send me /start <code>.",
            );
        }
        Err(error) => return Outcome::refused(error.public_message()),
    };
    match (action, item) {
        ("o", _) => match boards::show(services, &actor, board).await {
            Ok((row, items)) => Outcome {
                notice: String::new(),
                refused: false,
                board: Some(render(&row, &items)),
                new_message: true,
                prompt: None,
            },
            Err(error) => Outcome::refused(error.public_message()),
        },
        ("r", _) => match owner_view(services, board).await {
            Ok(view) => Outcome {
                notice: "Refreshed".to_owned(),
                refused: false,
                board: Some(view),
                new_message: false,
                prompt: None,
            },
            Err(error) => Outcome::refused(error.public_message()),
        },
        ("a", Some(item)) => match boards::prompt(services, &actor, board, item).await {
            Ok(shown) => Outcome {
                notice: String::new(),
                refused: false,
                board: None,
                new_message: false,
                prompt: Some((board, item, shown.label())),
            },
            Err(Error::Forbidden(_) | Error::Unauthenticated) => {
                Outcome::refused("You may not set this input.")
            }
            Err(error) => Outcome::refused(error.public_message()),
        },
        ("p", Some(item)) => match boards::press(services, &actor, board, item).await {
            Ok(row) => Outcome {
                notice: format!("Set to {}", row.value.unwrap_or_default()),
                refused: false,
                board: owner_view(services, board).await.ok(),
                new_message: false,
                prompt: None,
            },
            Err(Error::Forbidden(_) | Error::Unauthenticated) => {
                Outcome::refused("You may not set this input.")
            }
            Err(error) => Outcome::refused(error.public_message()),
        },
        _ => Outcome::refused("This button is not known."),
    }
}
