//! Alert rules, channels, boards and the alert history as the API returns them, and how the app words
//! them: plain Rust, tested on the host.

use serde::Deserialize;

/// An alert rule (`alertRules`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub uuid: String,
    /// `above`, `below`, `offline`, `update_failed`, `no_value` or `rollout_halted`.
    pub kind: String,
    pub unit_uuid: Option<String>,
    pub node_uuid: Option<String>,
    pub repo_unit_uuid: Option<String>,
    pub threshold: Option<f64>,
    pub hysteresis: f64,
    pub min_duration_seconds: i64,
    pub cooldown_seconds: i64,
    pub timeout_seconds: Option<i64>,
    pub muted_until: Option<String>,
    /// `normal` or `firing`.
    pub state: String,
    pub last_fired_at: Option<String>,
}

impl Rule {
    /// What the rule fires on, in words: "above 30 (back to normal at 28 or below), for 60 s".
    pub fn describe(&self) -> String {
        let threshold = self.threshold.map(number).unwrap_or_else(|| "?".into());
        let timeout = self.timeout_seconds.map(seconds).unwrap_or_default();
        let mut text = match self.kind.as_str() {
            "above" | "below" => {
                let above = self.kind == "above";
                let mut text = format!("{} {threshold}", self.kind);
                if self.hysteresis > 0.0 {
                    let back = self
                        .threshold
                        .map(|t| {
                            if above {
                                t - self.hysteresis
                            } else {
                                t + self.hysteresis
                            }
                        })
                        .map(number)
                        .unwrap_or_default();
                    let side = if above { "below" } else { "above" };
                    text.push_str(&format!(" (back to normal at {back} or {side})"));
                }
                text
            }
            "offline" => format!("offline for {timeout}"),
            "no_value" => format!("no value for {timeout}"),
            "update_failed" => "an update fails".into(),
            "rollout_halted" => "a rollout halts".into(),
            other => other.to_owned(),
        };
        if self.min_duration_seconds > 0 {
            text.push_str(&format!(
                ", held for {}",
                seconds(self.min_duration_seconds)
            ));
        }
        if self.cooldown_seconds > 0 {
            text.push_str(&format!(
                ", at most one alert per {}",
                seconds(self.cooldown_seconds)
            ));
        }
        text
    }

    /// Whether the rule is muted at `now_ms` (milliseconds since the epoch); `parse` reads a
    /// `DateTime` into the same unit (the browser's `Date.parse`).
    pub fn muted_at(&self, now_ms: f64, parse: impl Fn(&str) -> f64) -> bool {
        self.muted_until
            .as_deref()
            .is_some_and(|until| parse(until) > now_ms)
    }
}

/// A channel (`alertChannels`): a linked Telegram chat or a webhook.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub uuid: String,
    /// `telegram` or `webhook`.
    pub kind: String,
    pub telegram_chat_id: Option<i64>,
    pub webhook_url: Option<String>,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub failures: i64,
}

impl Channel {
    /// The chat or the URL.
    pub fn target(&self) -> String {
        match (&self.telegram_chat_id, &self.webhook_url) {
            (Some(chat), _) => format!("Telegram chat {chat}"),
            (None, Some(url)) => url.clone(),
            (None, None) => self.kind.clone(),
        }
    }
}

/// An alert of the history (`alerts`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub uuid: String,
    /// `fired` or `resolved`.
    pub kind: String,
    pub rule_kind: String,
    pub unit_name: Option<String>,
    pub variable: Option<String>,
    pub value: Option<String>,
    pub message: String,
    pub muted: bool,
    pub created_at: String,
}

/// One item of a board (`boards { items }`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BoardItem {
    pub node_uuid: String,
    pub label: String,
    pub is_input: bool,
    pub value: Option<String>,
    pub last_value: Option<String>,
}

impl BoardItem {
    /// `[fan = 1]` for a button with a preset value, `[fan = ?]` for one that asks, `temp: 21.5` for
    /// an output.
    pub fn describe(&self) -> String {
        if self.is_input {
            format!(
                "[{} = {}]",
                self.label,
                self.value.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "{}: {}",
                self.label,
                self.last_value.as_deref().unwrap_or("—")
            )
        }
    }
}

/// A board (`boards`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    pub uuid: String,
    pub name: String,
    pub items: Vec<BoardItem>,
}

/// A number without a needless `.0`.
fn number(value: f64) -> String {
    format!("{value}")
}

/// A duration in the largest unit that divides it: `90 s`, `5 min`, `2 h`.
pub fn seconds(total: i64) -> String {
    match total {
        t if t > 0 && t % 3600 == 0 => format!("{} h", t / 3600),
        t if t > 0 && t % 60 == 0 => format!("{} min", t / 60),
        t => format!("{t} s"),
    }
}

/// A `DateTime` of the API (RFC 3339 in UTC) as `2026-11-28 12:00:00 UTC`, the way the bot writes it.
pub fn when(at: &str) -> String {
    match at.get(..19) {
        Some(start) if at.ends_with('Z') || at.ends_with("+00:00") => {
            format!("{} UTC", start.replacen('T', " ", 1))
        }
        _ => at.to_owned(),
    }
}

/// How long to mute a rule for, in minutes, and how the app says it.
pub const MUTE_PERIODS: [(u32, &str); 5] = [
    (15, "15 minutes"),
    (60, "1 hour"),
    (480, "8 hours"),
    (1440, "1 day"),
    (10080, "1 week"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: &str) -> Rule {
        Rule {
            uuid: "r".into(),
            kind: kind.into(),
            unit_uuid: None,
            node_uuid: None,
            repo_unit_uuid: None,
            threshold: Some(30.0),
            hysteresis: 0.0,
            min_duration_seconds: 0,
            cooldown_seconds: 0,
            timeout_seconds: Some(300),
            muted_until: None,
            state: "normal".into(),
            last_fired_at: None,
        }
    }

    #[test]
    fn rules_say_what_fires_them() {
        let mut above = rule("above");
        assert_eq!(above.describe(), "above 30");
        above.hysteresis = 2.5;
        above.min_duration_seconds = 60;
        above.cooldown_seconds = 3600;
        assert_eq!(
            above.describe(),
            "above 30 (back to normal at 27.5 or below), held for 1 min, at most one alert per 1 h"
        );
        let mut below = rule("below");
        below.hysteresis = 1.0;
        assert_eq!(below.describe(), "below 30 (back to normal at 31 or above)");
        assert_eq!(rule("offline").describe(), "offline for 5 min");
        assert_eq!(rule("no_value").describe(), "no value for 5 min");
        assert_eq!(rule("update_failed").describe(), "an update fails");
        assert_eq!(seconds(90), "90 s");
        assert_eq!(seconds(0), "0 s");
    }

    #[test]
    fn a_rule_is_muted_until_its_time_passes() {
        let mut r = rule("above");
        let parse = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
        assert!(!r.muted_at(100.0, parse));
        r.muted_until = Some("200".into());
        assert!(r.muted_at(100.0, parse));
        assert!(!r.muted_at(300.0, parse));
    }

    #[test]
    fn times_read_like_the_bots() {
        assert_eq!(
            when("2026-11-28T12:00:00.123456+00:00"),
            "2026-11-28 12:00:00 UTC"
        );
        assert_eq!(when("2026-11-28T12:00:00Z"), "2026-11-28 12:00:00 UTC");
        assert_eq!(when("yesterday"), "yesterday");
    }

    #[test]
    fn board_items_show_their_button_or_value() {
        let mut item = BoardItem {
            node_uuid: "n".into(),
            label: "fan".into(),
            is_input: true,
            value: Some("1".into()),
            last_value: None,
        };
        assert_eq!(item.describe(), "[fan = 1]");
        item.value = None;
        assert_eq!(item.describe(), "[fan = ?]");
        item.is_input = false;
        item.last_value = Some("21.5".into());
        assert_eq!(item.describe(), "fan: 21.5");
    }
}
