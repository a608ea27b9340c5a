//! Layered auto-layout: repo_units in the first column, their units in the second, the units' variables
//! in the third, each group centred on what it feeds so edges stay short and mostly horizontal.

use std::collections::HashMap;

use crate::model::{Graph, NodeKind, Unit};

/// A point in the canvas' own coordinates.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// Width and height of a node's shape.
pub fn size(kind: NodeKind) -> (f64, f64) {
    match kind {
        NodeKind::RepoUnit => (180.0, 56.0),
        NodeKind::Unit => (170.0, 60.0),
        NodeKind::Input | NodeKind::Output => (190.0, 40.0),
    }
}

const COLUMN_X: [f64; 3] = [0.0, 280.0, 560.0];
/// Where mirrors of remote outputs go when no input places them: right of the variables.
pub const MIRROR_X: f64 = COLUMN_X[2] + 250.0;
const VARIABLE_GAP: f64 = 12.0;
const UNIT_GAP: f64 = 36.0;
const REPO_GAP: f64 = 60.0;

/// Stacks `units` from `y` down, each beside its variables; returns the block's top and bottom.
fn place_units(at: &mut HashMap<String, Point>, units: Vec<&Unit>, y: &mut f64) -> (f64, f64) {
    let top = *y;
    for unit in units {
        let (_, unit_h) = size(NodeKind::Unit);
        let (_, var_h) = size(NodeKind::Input);
        let vars = unit.nodes.len() as f64;
        let block = (vars * (var_h + VARIABLE_GAP) - VARIABLE_GAP).max(unit_h);
        // Inputs first, then outputs, so a unit reads left-to-right as in → out.
        let mut nodes: Vec<_> = unit.nodes.iter().collect();
        nodes.sort_by_key(|n| (!n.is_input(), n.topic_name.clone()));
        for (i, node) in nodes.iter().enumerate() {
            at.insert(
                node.uuid.clone(),
                Point {
                    x: COLUMN_X[2],
                    y: *y + i as f64 * (var_h + VARIABLE_GAP),
                },
            );
        }
        at.insert(
            unit.uuid.clone(),
            Point {
                x: COLUMN_X[1],
                y: *y + (block - unit_h) / 2.0,
            },
        );
        *y += block + UNIT_GAP;
    }
    (top, *y - UNIT_GAP)
}

/// Positions (top-left corners) for every node of `graph`.
pub fn layered(graph: &Graph) -> HashMap<String, Point> {
    let mut at = HashMap::new();
    let mut y = 0.0;
    for repo in &graph.repo_units {
        let units: Vec<_> = graph
            .units
            .iter()
            .filter(|u| u.repo_unit_uuid == repo.uuid)
            .collect();
        let (_, repo_h) = size(NodeKind::RepoUnit);
        let (top, bottom) = place_units(&mut at, units, &mut y);
        let block = (bottom - top).max(repo_h);
        at.insert(
            repo.uuid.clone(),
            Point {
                x: COLUMN_X[0],
                y: top + (block - repo_h) / 2.0,
            },
        );
        y = top + block + REPO_GAP;
    }
    // Units whose repo_unit the caller may not see still get a place, below the rest.
    let orphans: Vec<_> = graph
        .units
        .iter()
        .filter(|u| graph.repo_unit(&u.repo_unit_uuid).is_none())
        .collect();
    place_units(&mut at, orphans, &mut y);
    at
}

/// Positions for nodes that have none yet, keeping those the user arranged: new nodes keep their layered
/// arrangement among themselves and go below everything already placed, so they never cover it.
pub fn fill_missing(graph: &Graph, positions: &mut HashMap<String, Point>) -> bool {
    let fresh = layered(graph);
    let missing: Vec<_> = fresh
        .iter()
        .filter(|(uuid, _)| !positions.contains_key(*uuid))
        .collect();
    if missing.is_empty() {
        return false;
    }
    let top_of_new = missing
        .iter()
        .map(|(_, p)| p.y)
        .fold(f64::INFINITY, f64::min);
    let below_old = positions
        .values()
        .map(|p| p.y + size(NodeKind::RepoUnit).1 + REPO_GAP)
        .fold(top_of_new, f64::max);
    for (uuid, point) in missing {
        positions.insert(
            uuid.clone(),
            Point {
                x: point.x,
                y: point.y - top_of_new + below_old,
            },
        );
    }
    true
}

/// The box around `positions`: (left, top, right, bottom), `None` when empty.
pub fn bounds(positions: &HashMap<String, Point>) -> Option<(f64, f64, f64, f64)> {
    let (w, h) = size(NodeKind::Input);
    positions.values().fold(None, |acc, p| {
        let (l, t, r, b) = acc.unwrap_or((p.x, p.y, p.x + w, p.y + h));
        Some((l.min(p.x), t.min(p.y), r.max(p.x + w), b.max(p.y + h)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::sample;

    #[test]
    fn layers_go_repo_unit_then_unit_then_variables() {
        let graph = sample();
        let at = layered(&graph);
        assert_eq!(at.len(), 1 + 2 + 4);
        assert!(at["r1"].x < at["u1"].x);
        assert!(at["u1"].x < at["o1"].x);
        assert_eq!(at["o1"].x, at["i2"].x);
    }

    #[test]
    fn nodes_of_a_column_never_overlap() {
        let graph = sample();
        let at = layered(&graph);
        let mut column: Vec<f64> = ["i1", "o1", "i2", "o2"].iter().map(|n| at[*n].y).collect();
        column.sort_by(f64::total_cmp);
        let (_, h) = size(NodeKind::Input);
        for pair in column.windows(2) {
            assert!(pair[1] - pair[0] >= h, "{column:?}");
        }
    }

    #[test]
    fn a_unit_sits_beside_its_variables() {
        let graph = sample();
        let at = layered(&graph);
        let (_, uh) = size(NodeKind::Unit);
        let (_, vh) = size(NodeKind::Input);
        let centre = at["u1"].y + uh / 2.0;
        assert!(centre > at["i1"].y && centre < at["o1"].y + vh);
    }

    #[test]
    fn arranged_nodes_keep_their_place() {
        let graph = sample();
        let mut at = HashMap::from([("u1".to_owned(), Point { x: 900.0, y: 900.0 })]);
        assert!(fill_missing(&graph, &mut at));
        assert_eq!(at["u1"], Point { x: 900.0, y: 900.0 });
        assert_eq!(at.len(), 7);
        assert!(!fill_missing(&graph, &mut at));
    }

    #[test]
    fn new_nodes_go_below_the_placed_ones() {
        let mut graph = sample();
        let second = graph.units.pop().unwrap();
        let mut at = layered(&graph);
        let bottom = bounds(&at).unwrap().3;
        graph.units.insert(0, second);
        assert!(fill_missing(&graph, &mut at));
        for id in ["u2", "o2", "i2"] {
            assert!(
                at[id].y >= bottom,
                "{id} at {:?}, placed ones end at {bottom}",
                at[id]
            );
        }
    }
}
