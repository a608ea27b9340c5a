//! The bot's commands: each parses its arguments, calls the services as the user the chat is linked to,
//! and answers in plain text. Errors are answered with their public message; causes stay in the log.

use chrono::{Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::Answer;
use crate::entities::{alert_rules, unit_nodes, units};
use crate::error::Error;
use crate::services::units::nodes::{self, NodeKind};
use crate::services::units::{UnitFilter, data};
use crate::services::{Actor, Services, access, alerts};

const HELP: &str = "Commands:
/units — your units, online state and version
/unit <name> — a unit's state, outputs and inputs
/boards — your boards: outputs' values, inputs as buttons
/set <unit> <input> <value> — set an input; the unit gets it over MQTT
/update <unit> — the state of the unit's last update
/alerts — your alert rules
/alerts mute <n> [minutes] — mute rule n (60 minutes unless told)
/alerts unmute <n> — unmute rule n
/unlink — stop sending alerts here";

const NOT_LINKED: &str = "This chat is not linked to a Pepeunit account. Create a link code in the web app \
                          (or with the createTelegramLinkCode mutation) and send /start <code>.";

/// Answers one message sent by the Telegram user `from` in `chat`. Commands run as the account `from`
/// linked in their private chat (whose id is theirs), so in a group each member acts with their own rights,
/// never with those of who linked the group.
pub(crate) async fn handle(services: &Services, chat: i64, from: i64, text: &str) -> Answer {
    let text = text.trim();
    let (command, args) = text
        .split_once(char::is_whitespace)
        .map_or((text, ""), |(c, a)| (c, a.trim()));
    // `/cmd@BotName` in groups.
    let command = command
        .trim_start_matches('/')
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match command.as_str() {
        "start" => start(services, chat, args).await.into(),
        "help" => HELP.to_owned().into(),
        _ => {
            let linked = match alerts::chat_actor(services, from).await {
                Ok(linked) => linked,
                Err(error) => return error.public_message().into(),
            };
            let Some((actor, user)) = linked else {
                return NOT_LINKED.to_owned().into();
            };
            if command == "boards" {
                return super::boards::list(services, &actor)
                    .await
                    .unwrap_or_else(|error| error.public_message().into());
            }
            let answer = match command.as_str() {
                "units" => list_units(services, &actor, user.uuid).await,
                "unit" => show_unit(services, &actor, args).await,
                "set" => set(services, &actor, args).await,
                "update" => update(services, &actor, args).await,
                "alerts" => rules(services, &actor, args).await,
                "unlink" => alerts::unlink_chat(services, &actor, chat)
                    .await
                    .map(|unlinked| {
                        if unlinked {
                            "Unlinked: this chat gets no more alerts.".to_owned()
                        } else {
                            "This chat is not linked to your account.".to_owned()
                        }
                    }),
                _ => Ok(format!("Unknown command.\n\n{HELP}")),
            };
            answer.unwrap_or_else(|error| error.public_message()).into()
        }
    }
}

async fn start(services: &Services, chat: i64, code: &str) -> String {
    if code.is_empty() {
        return match alerts::chat_actor(services, chat).await {
            Ok(Some((_, user))) => format!("This chat is linked to {}.\n\n{HELP}", user.login),
            Ok(None) => NOT_LINKED.to_owned(),
            Err(error) => error.public_message(),
        };
    }
    match alerts::link_chat(services, code, chat).await {
        Ok(user) => format!("Linked to {}: alerts will come here.\n\n{HELP}", user.login),
        Err(Error::Forbidden(_)) => {
            "This code is not valid, expired or was already used: create a new one in the web app."
                .to_owned()
        }
        Err(error) => error.public_message(),
    }
}

fn short(commit: Option<&str>) -> String {
    commit.map_or_else(|| "unknown".to_owned(), |c| c.chars().take(8).collect())
}

fn variable(node: &unit_nodes::Model) -> &str {
    node.topic_name
        .strip_suffix("/pepeunit")
        .unwrap_or(&node.topic_name)
}

async fn list_units(services: &Services, actor: &Actor, user: Uuid) -> Result<String, Error> {
    let filter = UnitFilter {
        creator_uuid: Some(user),
        ..UnitFilter::default()
    };
    let (rows, total) = crate::services::units::list(services, actor, filter, 50, 0).await?;
    if rows.is_empty() {
        return Ok("You have no units.".to_owned());
    }
    let mut out = String::from("Your units:\n");
    for unit in &rows {
        let online = if services.live().is_online(unit.uuid) {
            "online"
        } else {
            "offline"
        };
        out.push_str(&format!(
            "• {} — {online}, version {}\n",
            unit.name,
            short(unit.reported_commit.as_deref())
        ));
    }
    if total > rows.len() as u64 {
        out.push_str(&format!("… and {} more", total - rows.len() as u64));
    }
    Ok(out)
}

/// The unit of this name, if `actor` may see it.
async fn find_unit(services: &Services, actor: &Actor, name: &str) -> Result<units::Model, Error> {
    let row = units::Entity::find()
        .filter(units::Column::Name.eq(name.trim()))
        .one(services.db())
        .await?
        .ok_or(Error::NotFound("unit"))?;
    access::find_visible::<units::Entity>(services.db(), actor, row.uuid, "unit").await
}

async fn show_unit(services: &Services, actor: &Actor, name: &str) -> Result<String, Error> {
    if name.is_empty() {
        return Ok("Usage: /unit <name>".to_owned());
    }
    let unit = find_unit(services, actor, name).await?;
    let online = if services.live().is_online(unit.uuid) {
        "online"
    } else {
        "offline"
    };
    let mut out = format!(
        "{} — {online}, version {}\n",
        unit.name,
        short(unit.reported_commit.as_deref())
    );
    let nodes = nodes::of_unit(services.db(), unit.uuid).await?;
    for kind in [NodeKind::Output, NodeKind::Input] {
        let title = match kind {
            NodeKind::Output => "Outputs",
            NodeKind::Input => "Inputs",
        };
        let mut lines: Vec<String> = nodes
            .iter()
            .filter(|n| NodeKind::of(n) == kind)
            .map(|n| {
                format!(
                    "• {} = {}",
                    variable(n),
                    n.last_value.as_deref().unwrap_or("—")
                )
            })
            .collect();
        if !lines.is_empty() {
            lines.sort();
            out.push_str(&format!("{title}:\n{}\n", lines.join("\n")));
        }
    }
    Ok(out)
}

async fn set(services: &Services, actor: &Actor, args: &str) -> Result<String, Error> {
    let mut parts = args.splitn(3, char::is_whitespace);
    let (Some(unit), Some(input), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok("Usage: /set <unit> <input> <value>".to_owned());
    };
    let value = value.trim();
    let unit = find_unit(services, actor, unit).await?;
    let node = nodes::of_unit(services.db(), unit.uuid)
        .await?
        .into_iter()
        .find(|n| {
            NodeKind::of(n) == NodeKind::Input && (variable(n) == input || n.topic_name == input)
        })
        .ok_or(Error::NotFound("input"))?;
    match data::set_input_value(services, actor, node.uuid, value).await {
        Ok(_) => Ok(format!(
            "{} of {} set to {value}.",
            variable(&node),
            unit.name
        )),
        Err(Error::Forbidden(_) | Error::Unauthenticated) => Ok(format!(
            "You may not set {} of {}: only its creator (or anyone, if the input is rewritable) may.",
            variable(&node),
            unit.name
        )),
        Err(error) => Err(error),
    }
}

async fn update(services: &Services, actor: &Actor, name: &str) -> Result<String, Error> {
    if name.is_empty() {
        return Ok("Usage: /update <unit>".to_owned());
    }
    let unit = find_unit(services, actor, name).await?;
    let status = unit.update_status.as_deref().unwrap_or("none");
    let at = unit
        .update_status_at
        .map(|at| format!(" at {}", at.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    Ok(format!(
        "{}: last update {status}{at}; target {}, running {}",
        unit.name,
        short(unit.target_commit.as_deref()),
        short(unit.reported_commit.as_deref())
    ))
}

fn describe(rule: &alert_rules::Model, unit: Option<&str>) -> String {
    let unit = unit.unwrap_or("?");
    let what = match rule.kind.as_str() {
        "above" | "below" => format!(
            "{unit}: {} {}",
            rule.kind,
            rule.threshold.unwrap_or_default()
        ),
        "offline" => format!(
            "{unit}: offline for {} s",
            rule.timeout_seconds.unwrap_or_default()
        ),
        "no_value" => format!(
            "{unit}: no value for {} s",
            rule.timeout_seconds.unwrap_or_default()
        ),
        "update_failed" => format!("{unit}: update failed"),
        other => other.to_owned(),
    };
    let muted = match rule.muted_until {
        Some(until) if until > Utc::now() => {
            format!(", muted until {}", until.format("%Y-%m-%d %H:%M UTC"))
        }
        _ => String::new(),
    };
    format!("{what} — {}{muted}", rule.state)
}

async fn rules(services: &Services, actor: &Actor, args: &str) -> Result<String, Error> {
    let list = alerts::rules(services, actor).await?;
    let mut words = args.split_whitespace();
    let action = words.next();
    if let Some(action @ ("mute" | "unmute")) = action {
        let n: usize = match words.next().and_then(|n| n.parse().ok()) {
            Some(n) if (1..=list.len()).contains(&n) => n,
            _ => return Ok(format!("Usage: /alerts {action} <n>, n from /alerts")),
        };
        let rule = &list[n - 1];
        let until = if action == "mute" {
            let minutes: i64 = words
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(60)
                .clamp(1, 7 * 24 * 60);
            Some(Utc::now() + Duration::minutes(minutes))
        } else {
            None
        };
        alerts::mute_rule(services, actor, rule.uuid, until).await?;
        return Ok(match until {
            Some(until) => format!(
                "Rule {n} muted until {}.",
                until.format("%Y-%m-%d %H:%M UTC")
            ),
            None => format!("Rule {n} unmuted."),
        });
    }
    if list.is_empty() {
        return Ok("You have no alert rules; create them in the web app.".to_owned());
    }
    let mut out = String::from("Your alert rules:\n");
    for (i, rule) in list.iter().enumerate() {
        let unit = match rule.unit_uuid {
            Some(unit) => units::Entity::find_by_id(unit)
                .one(services.db())
                .await?
                .map(|u| u.name),
            None => None,
        };
        out.push_str(&format!("{}. {}\n", i + 1, describe(rule, unit.as_deref())));
    }
    Ok(out)
}
