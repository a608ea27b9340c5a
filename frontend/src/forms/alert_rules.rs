//! The caller's alert rules on one output, unit or repo_unit, with mute, unmute and delete, and the form
//! that adds one. The variable, unit and repo_unit panels each show it for what they are about.

use dioxus::prelude::*;
use serde_json::{Value, json};

use super::fields::{FormError, SelectField, TextField, names};
use crate::alerts::{MUTE_PERIODS, Rule, when};
use crate::api::{gql, queries};
use crate::app::{Store, act, act_in_form};
use crate::errors::ApiError;

/// What the rules watch.
#[derive(Clone, Debug, PartialEq)]
pub enum Watched {
    Output(String),
    Unit(String),
    RepoUnit(String),
}

impl Watched {
    /// The field of `CreateAlertRuleInput` that names it, and its uuid.
    fn key(&self) -> (&'static str, &str) {
        match self {
            Watched::Output(uuid) => ("nodeUuid", uuid),
            Watched::Unit(uuid) => ("unitUuid", uuid),
            Watched::RepoUnit(uuid) => ("repoUnitUuid", uuid),
        }
    }

    /// The kinds of rule it can have (`AlertRuleKind`), with their labels.
    fn kinds(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Watched::Output(_) => &[
                ("ABOVE", "The value goes above a threshold"),
                ("BELOW", "The value goes below a threshold"),
                ("NO_VALUE", "No value for a while"),
            ],
            Watched::Unit(_) => &[
                ("OFFLINE", "Offline for a while"),
                ("UPDATE_FAILED", "An update fails"),
            ],
            Watched::RepoUnit(_) => &[("ROLLOUT_HALTED", "A rollout halts")],
        }
    }

    fn watches(&self, rule: &Rule) -> bool {
        let uuid = match self {
            Watched::Output(_) => &rule.node_uuid,
            Watched::Unit(_) => &rule.unit_uuid,
            Watched::RepoUnit(_) => &rule.repo_unit_uuid,
        };
        uuid.as_deref() == Some(self.key().1)
    }
}

const FIELDS: [&str; 6] = [
    "kind",
    "threshold",
    "hysteresis",
    "minDurationSeconds",
    "cooldownSeconds",
    "timeoutSeconds",
];

/// `text` as a number for `field` (nothing when empty: the server's default, or its error), or the
/// error to show beside the field.
fn number<T: std::str::FromStr>(text: &str, field: &str) -> Result<Option<T>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| ApiError {
        message: "must be a number".into(),
        code: "VALIDATION".into(),
        field: Some(field.into()),
    })
}

/// The `CreateAlertRuleInput` the form describes.
fn rule_input(
    watched: &Watched,
    kind: &str,
    texts: [(&str, String); 5],
) -> Result<Value, ApiError> {
    let (field, uuid) = watched.key();
    let mut input = json!({ "kind": kind, field: uuid });
    let wanted: &[&str] = match kind {
        "ABOVE" | "BELOW" => &[
            "threshold",
            "hysteresis",
            "minDurationSeconds",
            "cooldownSeconds",
        ],
        "OFFLINE" | "NO_VALUE" => &["timeoutSeconds"],
        _ => &[],
    };
    for (name, text) in texts {
        if !wanted.contains(&name) {
            continue;
        }
        let value = if name == "threshold" || name == "hysteresis" {
            number::<f64>(&text, name)?.map(|v| json!(v))
        } else {
            number::<i64>(&text, name)?.map(|v| json!(v))
        };
        if let Some(value) = value {
            input[name] = value;
        }
    }
    Ok(input)
}

/// The caller's rules on `watched` and the form to add one.
#[component]
pub fn AlertRules(watched: Watched) -> Element {
    let store = use_context::<Store>();
    let kinds = watched.kinds();
    let kind = use_signal(|| kinds[0].0.to_owned());
    let threshold = use_signal(String::new);
    let hysteresis = use_signal(|| "0".to_string());
    let min_duration = use_signal(|| "0".to_string());
    let cooldown = use_signal(|| "0".to_string());
    let timeout = use_signal(|| "300".to_string());
    let mut error = use_signal(|| None);
    let rules = use_resource(move || {
        let _ = (store.generation)();
        async move { gql(queries::ALERT_RULES, json!({})).await }
    });
    let (rules, load_error): (Vec<Rule>, Option<String>) = match &*rules.read() {
        None => (Vec::new(), None),
        Some(Ok(data)) => (
            serde_json::from_value::<Vec<Rule>>(data["alertRules"].clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|r| watched.watches(r))
                .collect(),
            None,
        ),
        Some(Err(e)) => (Vec::new(), Some(e.message.clone())),
    };

    let create = {
        let watched = watched.clone();
        move |e: FormEvent| {
            e.prevent_default();
            let texts = [
                ("threshold", threshold()),
                ("hysteresis", hysteresis()),
                ("minDurationSeconds", min_duration()),
                ("cooldownSeconds", cooldown()),
                ("timeoutSeconds", timeout()),
            ];
            error.set(None);
            match rule_input(&watched, &kind(), texts) {
                Ok(input) => act_in_form(
                    store,
                    error,
                    queries::CREATE_ALERT_RULE,
                    json!({ "input": input }),
                    "Alert rule added",
                ),
                Err(e) => error.set(Some(e)),
            }
        }
    };
    let options: Vec<(String, String)> = kinds
        .iter()
        .map(|(v, l)| ((*v).to_owned(), (*l).to_owned()))
        .collect();
    let threshold_kind = matches!(kind().as_str(), "ABOVE" | "BELOW");
    let timeout_kind = matches!(kind().as_str(), "OFFLINE" | "NO_VALUE");

    rsx! {
        section { class: "alert-rules",
            h3 { "Alert rules" }
            if let Some(message) = load_error {
                p { class: "form-error", role: "alert", "{message}" }
            }
            if rules.is_empty() {
                p { class: "muted", "No alert rules of yours here. Alerts go to your channels (Alerts in the toolbar) and the alert history." }
            }
            ul { id: "alert-rules", class: "rows",
                for rule in rules {
                    RuleRow { key: "{rule.uuid}", rule }
                }
            }
            details { class: "settings", open: true,
                summary { "New alert rule" }
                form { id: "alert-rule-form", onsubmit: create,
                    FormError { error, fields: names(&FIELDS) }
                    SelectField { label: "Alert when", name: "kind", value: kind, options, error }
                    if threshold_kind {
                        TextField { label: "Threshold", name: "threshold", value: threshold, error, kind: "number" }
                        TextField { label: "Hysteresis: how far back counts as normal again", name: "hysteresis", value: hysteresis, error, kind: "number" }
                        TextField { label: "Minimum duration past the threshold, seconds", name: "minDurationSeconds", value: min_duration, error, kind: "number" }
                        TextField { label: "Cooldown between alerts, seconds", name: "cooldownSeconds", value: cooldown, error, kind: "number" }
                    }
                    if timeout_kind {
                        TextField { label: "After how many seconds", name: "timeoutSeconds", value: timeout, error, kind: "number" }
                    }
                    div { class: "actions", button { class: "primary", r#type: "submit", "Add alert rule" } }
                }
            }
        }
    }
}

/// One rule: what fires it, its state, mute for a period or unmute, delete.
#[component]
fn RuleRow(rule: Rule) -> Element {
    let store = use_context::<Store>();
    let mut period = use_signal(|| MUTE_PERIODS[1].0.to_string());
    let mut confirm_delete = use_signal(|| false);
    let muted = rule.muted_at(js_sys::Date::now(), js_sys::Date::parse);
    let run = move |query: &'static str, variables: Value, done: &'static str| {
        spawn(async move {
            let _ = act(store, query, variables, done).await;
        });
    };
    let mute = {
        let uuid = rule.uuid.clone();
        move |_| {
            let minutes = period().parse::<u32>().unwrap_or(60);
            run(
                queries::MUTE_ALERT_RULE,
                json!({ "uuid": uuid, "minutes": minutes }),
                "Alert rule muted",
            );
        }
    };
    let unmute = {
        let uuid = rule.uuid.clone();
        move |_| {
            run(
                queries::MUTE_ALERT_RULE,
                json!({ "uuid": uuid, "minutes": 0 }),
                "Alert rule unmuted",
            )
        }
    };
    let delete = {
        let uuid = rule.uuid.clone();
        move |_| {
            if !confirm_delete() {
                confirm_delete.set(true);
                return;
            }
            run(
                queries::DELETE_ALERT_RULE,
                json!({ "uuid": uuid }),
                "Alert rule deleted",
            );
        }
    };
    let period_id = format!("mute-period-{}", rule.uuid);
    let until = rule.muted_until.as_deref().map(when).unwrap_or_default();

    rsx! {
        li { class: "row rule", "data-kind": "{rule.kind}", "data-state": "{rule.state}",
            span { class: "row-text",
                "{rule.describe()}"
                if rule.state == "firing" {
                    " · "
                    strong { class: "firing", "firing" }
                }
                if let Some(at) = &rule.last_fired_at {
                    span { class: "muted", " · last alert {when(at)}" }
                }
                if muted {
                    " · "
                    span { class: "muted-until", "muted until {until}" }
                }
            }
            if muted {
                button { r#type: "button", onclick: unmute, "Unmute" }
            } else {
                label { class: "sr-only", r#for: "{period_id}", "Mute for" }
                select { id: "{period_id}", onchange: move |e: FormEvent| period.set(e.value()),
                    for (minutes , label) in MUTE_PERIODS {
                        option { value: "{minutes}", selected: period() == minutes.to_string(), "{label}" }
                    }
                }
                button { r#type: "button", onclick: mute, "Mute" }
            }
            button { r#type: "button", class: "danger", onclick: delete,
                if confirm_delete() { "Really delete?" } else { "Delete" }
            }
        }
    }
}
