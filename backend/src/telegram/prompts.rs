//! Value prompts of board buttons without a preset value: the press makes the bot send a message with
//! `ForceReply`, and a reply to that message, in that chat, by the user who pressed, within [`TTL`],
//! sets the input. Pending prompts live in memory, bounded per chat and overall (a restart forgets
//! them: the user presses the button again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// How long a prompt waits for its reply.
pub(crate) const TTL: Duration = Duration::from_secs(5 * 60);
/// Prompts one chat may have waiting; a new one replaces the chat's oldest.
const PER_CHAT: usize = 8;
/// Prompts waiting in all; a new one replaces the oldest.
const TOTAL: usize = 10_000;
/// How the prompt's text begins, to recognise a reply to one that is gone.
pub(crate) const PREFIX: &str = "✏️ Send the value for";

/// A prompt waiting for its reply.
#[derive(Debug, Clone)]
pub(crate) struct Prompt {
    pub board: Uuid,
    pub item: i64,
    /// The Telegram user who pressed, the only one whose reply counts.
    pub from: i64,
    pub label: String,
    /// The board's message, edited with fresh values once the value is set.
    pub board_message: Option<i32>,
}

/// What a reply to message `id` is.
pub(crate) enum Reply {
    /// The answer to a pending prompt (which is now spent).
    Answer(Prompt),
    /// A reply by someone other than who pressed; the prompt keeps waiting.
    NotYours,
    /// No prompt waits on that message (expired, answered, or forgotten by a restart).
    Unknown,
}

/// The pending prompts, keyed by chat and the prompt's message id.
#[derive(Default)]
pub(crate) struct Prompts {
    waiting: Mutex<HashMap<(i64, i32), (Prompt, Instant)>>,
}

impl Prompts {
    /// Registers the prompt sent as message `id` in `chat`.
    pub fn insert(&self, chat: i64, id: i32, prompt: Prompt) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        waiting.retain(|_, (_, at)| now.duration_since(*at) < TTL);
        let oldest = |waiting: &HashMap<(i64, i32), (Prompt, Instant)>, chat: Option<i64>| {
            waiting
                .iter()
                .filter(|((c, _), _)| chat.is_none_or(|chat| *c == chat))
                .min_by_key(|(_, (_, at))| *at)
                .map(|(key, _)| *key)
        };
        if waiting.keys().filter(|(c, _)| *c == chat).count() >= PER_CHAT
            && let Some(key) = oldest(&waiting, Some(chat))
        {
            waiting.remove(&key);
        }
        if waiting.len() >= TOTAL
            && let Some(key) = oldest(&waiting, None)
        {
            waiting.remove(&key);
        }
        waiting.insert((chat, id), (prompt, now));
    }

    /// Takes the prompt a reply by `from` to message `id` in `chat` answers.
    pub fn take(&self, chat: i64, id: i32, from: i64) -> Reply {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.get(&(chat, id)) {
            Some((_, at)) if at.elapsed() >= TTL => {
                waiting.remove(&(chat, id));
                Reply::Unknown
            }
            Some((prompt, _)) if prompt.from != from => Reply::NotYours,
            Some(_) => waiting
                .remove(&(chat, id))
                .map_or(Reply::Unknown, |(prompt, _)| Reply::Answer(prompt)),
            None => Reply::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(from: i64) -> Prompt {
        Prompt {
            board: Uuid::nil(),
            item: 1,
            from,
            label: "x".into(),
            board_message: None,
        }
    }

    #[test]
    fn a_prompt_is_answered_once_and_only_by_who_pressed() {
        let prompts = Prompts::default();
        prompts.insert(10, 5, prompt(7));
        assert!(matches!(prompts.take(10, 5, 8), Reply::NotYours));
        assert!(matches!(prompts.take(11, 5, 7), Reply::Unknown));
        assert!(matches!(prompts.take(10, 5, 7), Reply::Answer(_)));
        assert!(matches!(prompts.take(10, 5, 7), Reply::Unknown));
    }

    #[test]
    fn a_chat_keeps_its_newest_prompts() {
        let prompts = Prompts::default();
        for id in 0..20 {
            prompts.insert(10, id, prompt(7));
        }
        let waiting = prompts.waiting.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(waiting.len(), PER_CHAT);
    }
}
