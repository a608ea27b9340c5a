//! The pop-up forms and panels, one module each, and the fields they share.

mod admin;
mod admin_users;
mod alert_channels;
mod alert_history;
mod alert_rules;
mod alerts;
mod auth;
mod boards;
mod env;
mod federation;
mod fields;
mod link;
mod password;
mod processing;
mod remote_unit;
mod repo_unit;
mod rollout;
mod series_chart;
mod unit;
mod unit_panel;
mod variable;

use dioxus::prelude::*;

use crate::app::{Dialog, Store};

/// Shows the open pop-up, if any.
#[component]
pub fn Dialogs() -> Element {
    let store = use_context::<Store>();
    let dialog = store.dialog.read().clone();
    match dialog {
        None => rsx! {},
        Some(Dialog::Login) => rsx! { auth::AuthForm { register: false } },
        Some(Dialog::Register) => rsx! { auth::AuthForm { register: true } },
        Some(Dialog::CreateRepoUnit) => rsx! { repo_unit::CreateRepoUnit {} },
        Some(Dialog::RepoUnit(uuid)) => rsx! { repo_unit::RepoUnitPanel { key: "{uuid}", uuid } },
        Some(Dialog::CreateUnit(repo)) => {
            rsx! { unit::UnitForm { key: "new-{repo}", repo, unit: None } }
        }
        Some(Dialog::EditUnit(uuid)) => {
            let repo = store
                .graph
                .read()
                .unit(&uuid)
                .map(|u| u.repo_unit_uuid.clone())
                .unwrap_or_default();
            rsx! { unit::UnitForm { key: "edit-{uuid}", repo, unit: Some(uuid) } }
        }
        Some(Dialog::Unit(uuid)) => rsx! { unit_panel::UnitPanel { key: "{uuid}", uuid } },
        Some(Dialog::UnitEnv(uuid)) => rsx! { env::EnvForm { key: "{uuid}", uuid } },
        Some(Dialog::Variable(uuid)) => rsx! { variable::VariablePanel { key: "{uuid}", uuid } },
        Some(Dialog::Link(uuid)) => rsx! { link::LinkPanel { key: "{uuid}", uuid } },
        Some(Dialog::StartRollout(repo)) => {
            rsx! { rollout::RolloutForm { key: "{repo}", repo } }
        }
        Some(Dialog::ChangePassword) => rsx! { password::ChangePassword {} },
        Some(Dialog::Admin) => rsx! { admin::AdminPanel {} },
        Some(Dialog::Federation) => rsx! { federation::FederationPanel {} },
        Some(Dialog::RemoteUnit) => rsx! { remote_unit::RemoteUnitDialog {} },
        Some(Dialog::Alerts) => rsx! { alerts::AlertsPanel {} },
    }
}
