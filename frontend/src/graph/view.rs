//! The canvas and its gestures. Moves are applied as deltas of the pointer divided by the zoom, so
//! nothing needs the canvas' screen position except zooming at the cursor.

use std::collections::HashSet;

use dioxus::prelude::*;

use super::mirror::MirrorNodes;
use super::node::{NodeData, NodeShape};
use crate::api::queries;
use crate::app::{Dialog, Store, act};
use crate::layout::{Point, size};
use crate::model::{Graph, NodeKind};

/// Pointer travel (screen pixels) under which a press counts as a click, not a drag.
const CLICK_SLOP: f64 = 4.0;
const MIN_ZOOM: f64 = 0.2;
const MAX_ZOOM: f64 = 3.0;

/// What the pressed pointer is doing.
#[derive(Clone, Debug, PartialEq)]
enum Gesture {
    Idle,
    Pan {
        last: (f64, f64),
    },
    Move {
        node: String,
        kind: NodeKind,
        last: (f64, f64),
        travel: f64,
    },
    /// From an output's port (or Shift-drag of an output) towards an input.
    Link {
        output: String,
        end: Point,
        last: (f64, f64),
    },
    /// Shift-drag from a repo_unit: releasing anywhere asks for a new unit of it.
    NewUnit {
        repo: String,
        end: Point,
        last: (f64, f64),
    },
}

fn nodes(graph: &Graph, shown: &HashSet<String>) -> Vec<NodeData> {
    let mut out = Vec::new();
    for repo in &graph.repo_units {
        out.push(NodeData {
            uuid: repo.uuid.clone(),
            kind: NodeKind::RepoUnit,
            title: repo.name.clone(),
            detail: match (&repo.last_sync_error, &repo.default_branch) {
                (Some(_), _) => "sync failed".into(),
                (None, Some(branch)) => format!("repo · {branch}"),
                (None, None) => "repo".into(),
            },
            online: true,
            problem: repo.last_sync_error.is_some(),
        });
    }
    for unit in &graph.units {
        let presence = if unit.online { "online" } else { "offline" };
        out.push(NodeData {
            uuid: unit.uuid.clone(),
            kind: NodeKind::Unit,
            title: unit.name.clone(),
            detail: match &unit.update_status {
                Some(status) => format!("{presence} · update {status}"),
                None => presence.into(),
            },
            online: unit.online,
            problem: unit.update_status.as_deref() == Some("failed"),
        });
        for node in &unit.nodes {
            out.push(NodeData {
                uuid: node.uuid.clone(),
                kind: if node.is_input() {
                    NodeKind::Input
                } else {
                    NodeKind::Output
                },
                title: node.short_name().to_owned(),
                detail: node.last_value.clone().unwrap_or_else(|| "—".into()),
                online: unit.online,
                problem: false,
            });
        }
    }
    out.retain(|n| shown.contains(&n.uuid));
    out
}

/// A curve from the right middle of one box to the left middle of another.
fn curve(from: Point, to: Point) -> String {
    let bend = ((to.x - from.x).abs() / 2.0).max(60.0);
    format!(
        "M{},{} C{},{} {},{} {},{}",
        from.x,
        from.y,
        from.x + bend,
        from.y,
        to.x - bend,
        to.y,
        to.x,
        to.y
    )
}

fn anchor(at: Point, kind: NodeKind, right: bool) -> Point {
    let (w, h) = size(kind);
    Point {
        x: at.x + if right { w } else { 0.0 },
        y: at.y + h / 2.0,
    }
}

/// Where the canvas sits on screen, for zooming at the cursor.
fn canvas_origin() -> (f64, f64) {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("graph-canvas"))
        .map(|e| {
            let rect = e.get_bounding_client_rect();
            (rect.left(), rect.top())
        })
        .unwrap_or_default()
}

/// The canvas' size on screen.
fn canvas_size() -> (f64, f64) {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("graph-canvas"))
        .map(|e| {
            let rect = e.get_bounding_client_rect();
            (rect.width(), rect.height())
        })
        .unwrap_or((800.0, 600.0))
}

#[component]
pub fn GraphView() -> Element {
    let store = use_context::<Store>();
    let mut pan = use_signal(|| (40.0, 40.0));
    let mut zoom = use_signal(|| 1.0);
    let mut gesture = use_signal(|| Gesture::Idle);
    let mut positions = store.positions;

    let graph = store.graph.read();
    let me = store
        .me
        .read()
        .as_ref()
        .map(|m| m.uuid.clone())
        .unwrap_or_default();
    let shown = store.filter.read().visible(&graph, &me);
    let drawn = nodes(&graph, &shown);
    let kinds: std::collections::HashMap<String, NodeKind> =
        drawn.iter().map(|n| (n.uuid.clone(), n.kind)).collect();
    let at = positions.read().clone();
    let edges: Vec<_> = graph
        .edges()
        .into_iter()
        .filter_map(|e| {
            let (fk, tk) = (*kinds.get(&e.from)?, *kinds.get(&e.to)?);
            let from = anchor(*at.get(&e.from)?, fk, true);
            let to = anchor(*at.get(&e.to)?, tk, false);
            Some((
                e.link.clone(),
                format!("{}-{}", e.from, e.to),
                curve(from, to),
            ))
        })
        .collect();
    let inputs: std::collections::HashMap<String, Point> = drawn
        .iter()
        .filter(|n| n.kind == NodeKind::Input)
        .filter_map(|n| Some((n.uuid.clone(), *at.get(&n.uuid)?)))
        .collect();
    let empty = graph.repo_units.is_empty() && graph.units.is_empty();
    drop(graph);
    let selected = match &*store.dialog.read() {
        Some(Dialog::RepoUnit(id) | Dialog::Unit(id) | Dialog::Variable(id)) => Some(id.clone()),
        _ => None,
    };
    let ghost = match &*gesture.read() {
        Gesture::Link { output, end, .. } => at
            .get(output)
            .map(|p| curve(anchor(*p, NodeKind::Output, true), *end)),
        Gesture::NewUnit { repo, end, .. } => at
            .get(repo)
            .map(|p| curve(anchor(*p, NodeKind::RepoUnit, true), *end)),
        _ => None,
    };
    let (px, py) = pan();
    let z = zoom();

    let on_move = move |e: PointerEvent| {
        let c = e.client_coordinates();
        let now = (c.x, c.y);
        let z = zoom();
        let mut g = gesture.write();
        match &mut *g {
            Gesture::Idle => {}
            Gesture::Pan { last } => {
                let (dx, dy) = (now.0 - last.0, now.1 - last.1);
                *last = now;
                pan.with_mut(|p| {
                    p.0 += dx;
                    p.1 += dy;
                });
            }
            Gesture::Move {
                node, last, travel, ..
            } => {
                let (dx, dy) = (now.0 - last.0, now.1 - last.1);
                *last = now;
                *travel += dx.abs() + dy.abs();
                if let Some(p) = positions.write().get_mut(node) {
                    p.x += dx / z;
                    p.y += dy / z;
                }
            }
            Gesture::Link { end, last, .. } | Gesture::NewUnit { end, last, .. } => {
                end.x += (now.0 - last.0) / z;
                end.y += (now.1 - last.1) / z;
                *last = now;
            }
        }
    };

    let on_up = move |_: PointerEvent| {
        let finished = gesture.replace(Gesture::Idle);
        match finished {
            Gesture::Move {
                node, kind, travel, ..
            } => {
                if travel < CLICK_SLOP {
                    store.open(match kind {
                        NodeKind::RepoUnit => Dialog::RepoUnit(node),
                        NodeKind::Unit => Dialog::Unit(node),
                        NodeKind::Input | NodeKind::Output => Dialog::Variable(node),
                    });
                } else {
                    store.save_positions();
                }
            }
            Gesture::NewUnit { repo, .. } => store.open(Dialog::CreateUnit(repo)),
            _ => {}
        }
    };

    let on_wheel = move |e: WheelEvent| {
        e.prevent_default();
        let dy = e.delta().strip_units().y;
        let old = zoom();
        let new = (old * if dy > 0.0 { 0.9 } else { 1.1 }).clamp(MIN_ZOOM, MAX_ZOOM);
        let (ox, oy) = canvas_origin();
        let c = e.client_coordinates();
        let (cx, cy) = (c.x - ox, c.y - oy);
        // Keep the point under the cursor where it is.
        pan.with_mut(|p| {
            p.0 = cx - (cx - p.0) * new / old;
            p.1 = cy - (cy - p.1) * new / old;
        });
        zoom.set(new);
    };

    let mut zoom_by = move |factor: f64| zoom.set((zoom() * factor).clamp(MIN_ZOOM, MAX_ZOOM));
    // Lays the graph out again and fits it to the canvas (on a phone that means zooming out).
    let relayout = move |_| {
        let fresh = crate::layout::layered(&store.graph.read());
        let (width, height) = canvas_size();
        let fit = crate::layout::bounds(&fresh).map_or(1.0, |(l, t, r, b)| {
            ((width - 40.0) / (r - l))
                .min((height - 40.0) / (b - t))
                .min(1.0)
        });
        let fit = fit.clamp(MIN_ZOOM, MAX_ZOOM);
        positions.set(fresh);
        pan.set((20.0, 60.0));
        zoom.set(fit);
        store.save_positions();
    };

    rsx! {
        div { class: "canvas-tools", role: "toolbar", "aria-label": "Canvas",
            button { "aria-label": "Zoom in", onclick: move |_| zoom_by(1.2), "+" }
            button { "aria-label": "Zoom out", onclick: move |_| zoom_by(1.0 / 1.2), "−" }
            button { id: "relayout", onclick: relayout, "Auto-layout" }
        }
        if empty {
            p { class: "empty", "Nothing here yet: add a firmware repository with “+ Repo”." }
        }
        svg {
            id: "graph-canvas",
            class: "canvas",
            role: "application",
            "aria-label": "Graph of repositories, units and variables",
            onpointerdown: move |e: PointerEvent| {
                let c = e.client_coordinates();
                gesture.set(Gesture::Pan { last: (c.x, c.y) });
            },
            onpointermove: on_move,
            onpointerup: on_up,
            onpointerleave: move |_| gesture.set(Gesture::Idle),
            onwheel: on_wheel,
            g { transform: "translate({px},{py}) scale({z})",
                for (link , key , d) in edges {
                    if let Some(link) = link {
                        g { key: "{key}", class: "edge-link",
                            path { class: "edge link", d: "{d}" }
                            path {
                                class: "edge-hit",
                                d: "{d}",
                                "data-link": "{link}",
                                onpointerdown: move |e: PointerEvent| e.stop_propagation(),
                                onclick: move |_| store.open(Dialog::Link(link.clone())),
                            }
                        }
                    } else {
                        path { key: "{key}", class: "edge", d: "{d}" }
                    }
                }
                MirrorNodes { inputs }
                for node in drawn {
                    {
                        let p = at.get(&node.uuid).copied().unwrap_or(Point { x: 0.0, y: 0.0 });
                        let uuid = node.uuid.clone();
                        let kind = node.kind;
                        let label = format!("{}: {} ({})", kind.as_str(), node.title, node.detail);
                        let is_selected = selected.as_deref() == Some(node.uuid.as_str());
                        rsx! {
                            g {
                                key: "{uuid}",
                                class: "node",
                                tabindex: "0",
                                role: "button",
                                "aria-label": "{label}",
                                "data-uuid": "{uuid}",
                                "data-kind": kind.as_str(),
                                onpointerdown: {
                                    let uuid = uuid.clone();
                                    move |e: PointerEvent| {
                                        e.stop_propagation();
                                        let c = e.client_coordinates();
                                        let last = (c.x, c.y);
                                        let shift = e.modifiers().shift();
                                        let end = anchor(p, kind, true);
                                        gesture.set(match kind {
                                            NodeKind::Output if shift => Gesture::Link { output: uuid.clone(), end, last },
                                            NodeKind::RepoUnit if shift => Gesture::NewUnit { repo: uuid.clone(), end, last },
                                            _ => Gesture::Move { node: uuid.clone(), kind, last, travel: 0.0 },
                                        });
                                    }
                                },
                                onpointerup: {
                                    let uuid = uuid.clone();
                                    move |e: PointerEvent| {
                                        let pending = gesture.read().clone();
                                        if let (Gesture::Link { output, .. }, NodeKind::Input) = (pending, kind) {
                                            e.stop_propagation();
                                            gesture.set(Gesture::Idle);
                                            let input = uuid.clone();
                                            spawn(async move {
                                                let _ = act(
                                                    store,
                                                    queries::CREATE_LINK,
                                                    serde_json::json!({ "output": output, "input": input }),
                                                    "Linked",
                                                )
                                                .await;
                                            });
                                        }
                                    }
                                },
                                onkeydown: {
                                    let uuid = uuid.clone();
                                    move |e: KeyboardEvent| {
                                        if e.key() == Key::Enter || e.key() == Key::Character(" ".into()) {
                                            store.open(match kind {
                                                NodeKind::RepoUnit => Dialog::RepoUnit(uuid.clone()),
                                                NodeKind::Unit => Dialog::Unit(uuid.clone()),
                                                NodeKind::Input | NodeKind::Output => Dialog::Variable(uuid.clone()),
                                            });
                                        }
                                    }
                                },
                                NodeShape { data: node.clone(), x: p.x, y: p.y, selected: is_selected }
                                if kind == NodeKind::Output {
                                    circle {
                                        class: "port",
                                        cx: "{p.x + size(kind).0}",
                                        cy: "{p.y + size(kind).1 / 2.0}",
                                        r: "8",
                                        "data-port": "{uuid}",
                                        onpointerdown: {
                                            let uuid = uuid.clone();
                                            move |e: PointerEvent| {
                                                e.stop_propagation();
                                                let c = e.client_coordinates();
                                                gesture.set(Gesture::Link {
                                                    output: uuid.clone(),
                                                    end: anchor(p, kind, true),
                                                    last: (c.x, c.y),
                                                });
                                            }
                                        },
                                    }
                                }
                            }
                        }
                    }
                }
                if let Some(d) = ghost {
                    path { class: "edge ghost", d: "{d}" }
                }
            }
        }
    }
}
