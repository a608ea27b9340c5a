//! One node of the canvas: its shape and colour by type, its label, and the live data it shows.

use dioxus::prelude::*;

use crate::layout::size;
use crate::model::NodeKind;

/// What a node shows; built by the view from the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeData {
    pub uuid: String,
    pub kind: NodeKind,
    pub title: String,
    /// Second line: a variable's value, a unit's presence and update status, a repo_unit's sync.
    pub detail: String,
    pub online: bool,
    pub problem: bool,
}

/// Cuts a label to what fits in a node.
fn fit(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The outline of a node of `kind`, `w` × `h`, at the origin.
pub fn outline(kind: NodeKind, w: f64, h: f64) -> String {
    let r = h / 2.0;
    match kind {
        // Rounded ends: a value comes in.
        NodeKind::Input => format!(
            "M{r},0 H{} A{r},{r} 0 0 1 {},{h} H{r} A{r},{r} 0 0 1 {r},0 Z",
            w - r,
            w - r
        ),
        // Arrow head: a value goes out.
        NodeKind::Output => format!("M0,0 H{} L{w},{r} L{},{h} H0 Z", w - 16.0, w - 16.0),
        // A folder-like tab: a repository.
        NodeKind::RepoUnit => format!(
            "M0,10 Q0,0 10,0 H60 L70,10 H{} Q{w},10 {w},20 V{} Q{w},{h} {},{h} H10 Q0,{h} 0,{} Z",
            w - 10.0,
            h - 10.0,
            w - 10.0,
            h - 10.0
        ),
        NodeKind::Unit => format!(
            "M6,0 H{} Q{w},0 {w},6 V{} Q{w},{h} {},{h} H6 Q0,{h} 0,{} V6 Q0,0 6,0 Z",
            w - 6.0,
            h - 6.0,
            w - 6.0,
            h - 6.0
        ),
    }
}

#[component]
pub fn NodeShape(data: NodeData, x: f64, y: f64, selected: bool) -> Element {
    let (w, h) = size(data.kind);
    let kind = data.kind.as_str();
    let title = fit(&data.title, 22);
    let detail = fit(&data.detail, 26);
    let state = if data.online { "online" } else { "offline" };
    let problem = if data.problem { " problem" } else { "" };
    let chosen = if selected { " selected" } else { "" };
    rsx! {
        g {
            transform: "translate({x},{y})",
            class: "shape {kind} {state}{problem}{chosen}",
            path { class: "body", d: outline(data.kind, w, h) }
            if data.kind == NodeKind::Unit {
                circle { class: "presence", cx: "{w - 14.0}", cy: "14", r: "6" }
            }
            text { class: "title", x: "12", y: "{h / 2.0 - 4.0}", "{title}" }
            text { class: "detail", x: "12", y: "{h / 2.0 + 12.0}", "data-value": "{data.detail}", "{detail}" }
        }
    }
}
