//! The root component: the session, the graph and its live updates, the toolbar, the canvas and the
//! pop-up that is open.

use std::collections::HashMap;
use std::rc::Rc;

use dioxus::prelude::*;
use futures_util::StreamExt;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::api::live::{self, LiveEvent, LiveSocket};
use crate::api::{Session, gql, queries};
use crate::broker::PortNotice;
use crate::errors::ApiError;
use crate::filter::{Filter, Scope};
use crate::forms::Dialogs;
use crate::graph::GraphView;
use crate::layout::{self, Point};
use crate::model::{Graph, Me, NodeKind, RepoUnit, Unit};

const STYLE: &str = include_str!("../assets/app.css");
const POSITIONS_KEY: &str = "pepeunit.positions";

/// The pop-up that is open.
#[derive(Clone, Debug, PartialEq)]
pub enum Dialog {
    Login,
    Register,
    CreateRepoUnit,
    RepoUnit(String),
    CreateUnit(String),
    Unit(String),
    EditUnit(String),
    UnitEnv(String),
    Variable(String),
    Link(String),
    /// The rollout form of a repo_unit.
    StartRollout(String),
    ChangePassword,
    /// The admin panel: users and instance settings.
    Admin,
    /// Peers, blocks and followers (admins).
    Federation,
    /// Preview a unit of another instance and link one of its outputs.
    RemoteUnit,
    /// The user's alert channels, boards and alert history.
    Alerts,
}

/// State shared by every component.
#[derive(Clone, Copy)]
pub struct Store {
    pub logged_in: Signal<bool>,
    pub me: Signal<Option<Me>>,
    pub graph: Signal<Graph>,
    pub positions: Signal<HashMap<String, Point>>,
    pub filter: Signal<Filter>,
    pub dialog: Signal<Option<Dialog>>,
    /// A short message at the bottom of the screen (what just happened or failed).
    pub notice: Signal<Option<String>>,
    /// Bumped to fetch the graph again after a change.
    pub generation: Signal<u64>,
}

impl Store {
    pub fn open(mut self, dialog: Dialog) {
        self.dialog.set(Some(dialog));
    }

    pub fn close(mut self) {
        self.dialog.set(None);
    }

    pub fn reload(mut self) {
        *self.generation.write() += 1;
    }

    pub fn say(mut self, message: impl Into<String>) {
        self.notice.set(Some(message.into()));
    }

    pub fn save_positions(self) {
        if let Ok(json) = serde_json::to_string(&*self.positions.read()) {
            Session::save(POSITIONS_KEY, &json);
        }
    }

    pub fn logout(mut self) {
        Session::clear();
        self.logged_in.set(false);
        self.me.set(None);
        self.graph.set(Graph::default());
        self.dialog.set(Some(Dialog::Login));
    }
}

async fn load_graph(mut store: Store) {
    let data = match gql(queries::GRAPH, serde_json::json!({})).await {
        Ok(data) => data,
        Err(error) if error.code == "UNAUTHENTICATED" => {
            store.logout();
            return;
        }
        Err(error) => {
            store.say(format!("Could not load the graph: {}", error.message));
            return;
        }
    };
    let parse = || -> Result<(Me, Graph), serde_json::Error> {
        Ok((
            serde_json::from_value(data["me"].clone())?,
            Graph {
                repo_units: serde_json::from_value::<Vec<RepoUnit>>(data["repoUnits"].clone())?,
                units: serde_json::from_value::<Vec<Unit>>(data["units"]["items"].clone())?,
            },
        ))
    };
    match parse() {
        Ok((me, graph)) => {
            let changed = layout::fill_missing(&graph, &mut store.positions.write());
            if changed {
                store.save_positions();
            }
            store.me.set(Some(me));
            store.graph.set(graph);
        }
        Err(error) => store.say(format!("Unexpected answer: {error}")),
    }
}

fn apply(mut store: Store, event: LiveEvent) {
    match event {
        LiveEvent::Value { node, value, at } => {
            store.graph.write().set_value(&node, &value, &at);
        }
        LiveEvent::Presence { unit, online } => {
            store.graph.write().set_online(&unit, online);
        }
        // A new state often comes with a new commit: update statuses are read again.
        LiveEvent::State { unit } if store.graph.read().unit(&unit).is_some() => store.reload(),
        LiveEvent::State { .. } => {}
    }
}

/// Escape closes the open pop-up wherever the focus is, also when it fell back to the page itself.
fn use_escape_closes(store: Store) {
    use_hook(move || {
        let (sender, mut receiver) = futures_channel::mpsc::unbounded::<()>();
        spawn(async move {
            while receiver.next().await.is_some() {
                store.close();
            }
        });
        let listener = Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(
            move |event: web_sys::KeyboardEvent| {
                if event.key() == "Escape" {
                    let _ = sender.unbounded_send(());
                }
            },
        );
        if let Some(document) = web_sys::window().and_then(|w| w.document()) {
            let _ = document
                .add_event_listener_with_callback("keydown", listener.as_ref().unchecked_ref());
        }
        // Kept for the app's lifetime: the listener stays registered.
        Rc::new(listener)
    });
}

#[component]
pub fn App() -> Element {
    let logged_in = Session::access().is_some();
    let store = use_context_provider(|| Store {
        logged_in: Signal::new(logged_in),
        me: Signal::new(None),
        graph: Signal::new(Graph::default()),
        positions: Signal::new(
            Session::load(POSITIONS_KEY)
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
        ),
        filter: Signal::new(Filter::default()),
        dialog: Signal::new((!logged_in).then_some(Dialog::Login)),
        notice: Signal::new(None),
        generation: Signal::new(0),
    });

    use_escape_closes(store);
    use_effect(move || {
        let _ = (store.generation)();
        if (store.logged_in)() {
            spawn(load_graph(store));
        }
    });

    let events = use_hook(|| {
        let (sender, mut receiver) = futures_channel::mpsc::unbounded::<LiveEvent>();
        spawn(async move {
            while let Some(event) = receiver.next().await {
                apply(store, event);
            }
        });
        sender
    });
    let units = use_memo(move || store.graph.read().unit_uuids());
    let mut socket = use_signal(|| None::<LiveSocket>);
    use_effect(move || {
        let units = units();
        let token = (store.logged_in)().then(Session::access).flatten();
        socket.set(token.and_then(|token| live::connect(&token, &units, events.clone())));
    });

    rsx! {
        style { {STYLE} }
        div { class: "app",
            Toolbar {}
            PortNotice {}
            main { class: "canvas-area", GraphView {} }
            Dialogs {}
            Notice {}
        }
    }
}

#[component]
fn Toolbar() -> Element {
    let store = use_context::<Store>();
    let mut filter = store.filter;
    let me = store.me.read().clone();
    let kinds = [
        (NodeKind::RepoUnit, "Repos"),
        (NodeKind::Unit, "Units"),
        (NodeKind::Input, "Inputs"),
        (NodeKind::Output, "Outputs"),
    ];
    rsx! {
        header { class: "toolbar",
            h1 { class: "brand", "Pepeunit" }
            if (store.logged_in)() {
                button {
                    id: "new-repo-unit",
                    class: "primary",
                    onclick: move |_| store.open(Dialog::CreateRepoUnit),
                    "+ Repo"
                }
                input {
                    id: "search",
                    r#type: "search",
                    placeholder: "Search",
                    "aria-label": "Search nodes",
                    value: "{filter.read().search}",
                    oninput: move |e: FormEvent| filter.write().search = e.value(),
                }
                select {
                    "aria-label": "Whose nodes",
                    onchange: move |e: FormEvent| filter.write().scope = Scope::parse(&e.value()),
                    for scope in Scope::ALL {
                        option { value: scope.label(), selected: filter.read().scope == scope, "{scope.label()}" }
                    }
                }
                div { class: "kinds", role: "group", "aria-label": "Node types",
                    for (kind , label) in kinds {
                        label { class: "kind {kind.as_str()}",
                            input {
                                r#type: "checkbox",
                                checked: filter.read().kinds.contains(&kind),
                                onchange: move |e: FormEvent| {
                                    let mut f = filter.write();
                                    if e.checked() {
                                        f.kinds.insert(kind);
                                    } else {
                                        f.kinds.remove(&kind);
                                    }
                                },
                            }
                            "{label}"
                        }
                    }
                }
                button { id: "remote-unit", onclick: move |_| store.open(Dialog::RemoteUnit), "+ Remote unit" }
                span { class: "spacer" }
                if let Some(me) = me {
                    if me.role == "ADMIN" {
                        button { id: "admin", onclick: move |_| store.open(Dialog::Admin), "Admin" }
                        button { id: "federation", onclick: move |_| store.open(Dialog::Federation), "Federation" }
                    }
                    span { class: "who", "{me.login}" }
                }
                button { id: "alerts", onclick: move |_| store.open(Dialog::Alerts), "Alerts" }
                button { id: "change-password", onclick: move |_| store.open(Dialog::ChangePassword), "Password" }
                button { onclick: move |_| store.logout(), "Log out" }
            } else {
                span { class: "spacer" }
                button { class: "primary", onclick: move |_| store.open(Dialog::Login), "Log in" }
            }
        }
    }
}

#[component]
fn Notice() -> Element {
    let store = use_context::<Store>();
    let mut notice = store.notice;
    let text = notice.read().clone();
    rsx! {
        if let Some(text) = text {
            div { class: "notice", role: "status",
                span { "{text}" }
                button { "aria-label": "Dismiss", onclick: move |_| notice.set(None), "×" }
            }
        }
    }
}

/// Runs a mutation, reports its error as a notice, and reloads the graph when it succeeded.
pub async fn act(
    store: Store,
    query: &str,
    variables: serde_json::Value,
    done: &str,
) -> Result<serde_json::Value, ApiError> {
    let result = gql(query, variables).await;
    match &result {
        Ok(_) => {
            store.say(done);
            store.reload();
        }
        Err(error) => store.say(error.message.clone()),
    }
    result
}

/// Runs a form's mutation like [`act`], in the background; a failure also shows in the form's `error`,
/// beside the field it names.
pub fn act_in_form(
    store: Store,
    mut error: Signal<Option<ApiError>>,
    query: &'static str,
    variables: serde_json::Value,
    done: &'static str,
) {
    spawn(async move {
        if let Err(e) = act(store, query, variables, done).await {
            error.set(Some(e));
        }
    });
}
