//! Mirrors of remote outputs, as the canvas draws them: outputs of units on other instances that are
//! linked into inputs here. A mirror sits right of the (first) input it feeds, where the layout puts
//! nothing, so it never covers a local node, and its edge enters that input from the right: at a glance
//! it is not one of this instance's outputs. A remote unit that went away (deleted, hidden or blocked
//! there, or the peering ended) is one unavailable mirror, below the others.

use std::collections::HashMap;

use serde::Deserialize;

use crate::layout::{Point, size};
use crate::model::NodeKind;

/// Space between an input and the mirror right of it.
const GAP_X: f64 = 60.0;
/// Space between mirrors feeding the same input, and between unavailable ones.
const GAP_Y: f64 = 56.0;

/// A remote unit this instance follows, as `remoteUnits` returns it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteUnit {
    pub uuid: String,
    pub address: String,
    pub peer_domain: String,
    pub name: Option<String>,
    pub status: String,
    pub outputs: Vec<RemoteOutput>,
    pub links: Vec<RemoteLink>,
}

/// A mirrored output of a remote unit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteOutput {
    pub name: String,
    pub last_value: Option<String>,
}

/// A link from a remote output (by name) into a local input.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteLink {
    pub output_name: String,
    pub input_uuid: String,
}

/// One mirror node to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    pub key: String,
    pub title: String,
    pub domain: String,
    pub unit: String,
    pub detail: String,
    pub available: bool,
    pub at: Point,
    /// Where its edges end: the left middle of each input it feeds.
    pub targets: Vec<Point>,
}

fn short(name: &str) -> &str {
    name.strip_suffix("/pepeunit").unwrap_or(name)
}

/// The mirrors of `units`, placed beside the inputs in `inputs` (uuid → top-left corner), each with the
/// right middle of every drawn input it feeds.
pub fn mirrors(units: &[RemoteUnit], inputs: &HashMap<String, Point>) -> Vec<Mirror> {
    let (input_w, input_h) = size(NodeKind::Input);
    let mut per_input: HashMap<String, usize> = HashMap::new();
    let mut gone = Vec::new();
    let mut out = Vec::new();
    for unit in units {
        let unit_name = unit.name.clone().unwrap_or_else(|| unit.address.clone());
        if unit.status == "gone" {
            gone.push(Mirror {
                key: format!("mirror-{}", unit.uuid),
                title: unit_name.clone(),
                domain: unit.peer_domain.clone(),
                unit: unit_name,
                detail: "unavailable".into(),
                available: false,
                at: Point { x: 0.0, y: 0.0 },
                targets: Vec::new(),
            });
            continue;
        }
        let mut by_output: Vec<(&str, Vec<&str>)> = Vec::new();
        for link in &unit.links {
            match by_output.iter_mut().find(|(o, _)| *o == link.output_name) {
                Some((_, ins)) => ins.push(&link.input_uuid),
                None => by_output.push((&link.output_name, vec![&link.input_uuid])),
            }
        }
        for (output, ins) in by_output {
            let drawn: Vec<Point> = ins.iter().filter_map(|i| inputs.get(*i).copied()).collect();
            let Some(first) = drawn.first().copied() else {
                continue;
            };
            let slot = per_input.entry(ins[0].to_owned()).or_default();
            let at = Point {
                x: first.x + input_w + GAP_X,
                y: first.y + GAP_Y * *slot as f64,
            };
            *slot += 1;
            let detail = match (
                unit.status.as_str(),
                unit.outputs.iter().find(|o| o.name == output),
            ) {
                ("pending", _) => format!("waiting for {}", unit.peer_domain),
                (_, Some(o)) => o.last_value.clone().unwrap_or_else(|| "—".into()),
                (_, None) => "unavailable".into(),
            };
            out.push(Mirror {
                key: format!("mirror-{}-{output}", unit.uuid),
                title: short(output).to_owned(),
                domain: unit.peer_domain.clone(),
                unit: unit_name.clone(),
                available: detail != "unavailable",
                detail,
                at,
                targets: drawn
                    .into_iter()
                    .map(|p| Point {
                        x: p.x + input_w,
                        y: p.y + input_h / 2.0,
                    })
                    .collect(),
            });
        }
    }
    // Unavailable ones in the mirrors' column (or the layout's third), below the available ones.
    let x = out
        .iter()
        .map(|m| m.at.x)
        .fold(None, |acc: Option<f64>, x| {
            Some(acc.map_or(x, |a| a.min(x)))
        })
        .unwrap_or(crate::layout::MIRROR_X);
    let mut y = out.iter().map(|m| m.at.y + GAP_Y).fold(0.0, f64::max);
    for mut mirror in gone {
        mirror.at = Point { x, y };
        y += GAP_Y;
        out.push(mirror);
    }
    out
}

/// How long until the mirrors are read again: soon while a follow waits for its answer, slowly while
/// values may change, never when there is nothing to show.
pub fn refresh_after(units: &[RemoteUnit]) -> Option<i32> {
    if units.iter().any(|u| u.status == "pending") {
        Some(1000)
    } else if units.iter().any(|u| u.status == "accepted") {
        Some(5000)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(status: &str) -> RemoteUnit {
        RemoteUnit {
            uuid: "r1".into(),
            address: "u@pu-b.example".into(),
            peer_domain: "pu-b.example".into(),
            name: Some("greenhouse".into()),
            status: status.into(),
            outputs: vec![RemoteOutput {
                name: "temp/pepeunit".into(),
                last_value: Some("21.5".into()),
            }],
            links: vec![RemoteLink {
                output_name: "temp/pepeunit".into(),
                input_uuid: "i1".into(),
            }],
        }
    }

    #[test]
    fn a_linked_output_sits_right_of_its_input_with_its_value() {
        let inputs = HashMap::from([("i1".to_owned(), Point { x: 560.0, y: 100.0 })]);
        let drawn = mirrors(&[unit("accepted")], &inputs);
        assert_eq!(drawn.len(), 1);
        assert_eq!(drawn[0].title, "temp");
        assert_eq!(drawn[0].detail, "21.5");
        assert!(drawn[0].available);
        assert!(drawn[0].at.x >= 560.0 + size(NodeKind::Input).0);
        assert_eq!(drawn[0].targets[0].x, 560.0 + size(NodeKind::Input).0);
        assert_eq!(drawn[0].targets.len(), 1);
    }

    #[test]
    fn a_gone_unit_is_one_unavailable_node_and_a_hidden_input_draws_nothing() {
        let drawn = mirrors(&[unit("gone")], &HashMap::new());
        assert_eq!(drawn.len(), 1);
        assert!(!drawn[0].available);
        assert!(mirrors(&[unit("accepted")], &HashMap::new()).is_empty());
    }

    #[test]
    fn two_mirrors_into_one_input_do_not_overlap() {
        let mut other = unit("accepted");
        other.uuid = "r2".into();
        let inputs = HashMap::from([("i1".to_owned(), Point { x: 560.0, y: 100.0 })]);
        let drawn = mirrors(&[unit("accepted"), other, unit("gone")], &inputs);
        assert_eq!(drawn.len(), 3);
        let mut ys: Vec<f64> = drawn.iter().map(|m| m.at.y).collect();
        ys.sort_by(f64::total_cmp);
        for pair in ys.windows(2) {
            assert!(pair[1] - pair[0] >= size(NodeKind::Output).1, "{ys:?}");
        }
    }

    #[test]
    fn mirrors_are_read_again_while_there_are_any() {
        assert_eq!(refresh_after(&[unit("pending")]), Some(1000));
        assert_eq!(refresh_after(&[unit("accepted")]), Some(5000));
        assert_eq!(refresh_after(&[unit("gone")]), None);
        assert_eq!(refresh_after(&[]), None);
    }
}
