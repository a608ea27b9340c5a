//! The graph as the API returns it: repo_units, units with their variables, and links.
//!
//! Field names follow the GraphQL schema (camelCase), so a query's `data` deserializes straight into
//! these types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The logged-in user.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub uuid: String,
    pub login: String,
    pub role: String,
}

/// A mirrored firmware repository.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepoUnit {
    pub uuid: String,
    pub creator_uuid: String,
    pub name: String,
    pub visibility: String,
    pub clone_url: String,
    pub is_private_repository: bool,
    pub default_branch: Option<String>,
    pub sync_period_seconds: i64,
    pub auto_sync: bool,
    pub last_synced_at: Option<String>,
    pub last_sync_error: Option<String>,
}

/// A link from an output to an input.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub uuid: String,
    pub output_uuid: String,
    pub input_uuid: String,
}

/// An input or output variable of a unit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    pub uuid: String,
    pub unit_uuid: String,
    /// `INPUT` or `OUTPUT`.
    pub kind: String,
    pub topic_name: String,
    pub visibility: String,
    pub last_value: Option<String>,
    pub last_value_at: Option<String>,
    pub links: Vec<Link>,
}

impl Variable {
    pub fn is_input(&self) -> bool {
        self.kind == "INPUT"
    }

    /// The name without the `/pepeunit` suffix every schema topic carries.
    pub fn short_name(&self) -> &str {
        self.topic_name
            .strip_suffix("/pepeunit")
            .unwrap_or(&self.topic_name)
    }
}

/// A device running a repo_unit's firmware.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    pub uuid: String,
    pub name: String,
    pub visibility: String,
    pub creator_uuid: String,
    pub repo_unit_uuid: String,
    pub follows_default_branch: bool,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub tag: Option<String>,
    pub target_commit: Option<String>,
    pub reported_commit: Option<String>,
    pub online: bool,
    pub update_status: Option<String>,
    pub nodes: Vec<Variable>,
}

/// Everything the canvas shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub repo_units: Vec<RepoUnit>,
    pub units: Vec<Unit>,
}

/// What a node of the canvas stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    RepoUnit,
    Unit,
    Input,
    Output,
}

impl NodeKind {
    /// The CSS class and the filter's name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::RepoUnit => "repo-unit",
            NodeKind::Unit => "unit",
            NodeKind::Input => "input",
            NodeKind::Output => "output",
        }
    }
}

/// An edge of the canvas.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The link's uuid for output → input edges (they can be deleted); `None` for structural edges.
    pub link: Option<String>,
}

impl Graph {
    /// Every link once (a link shows on both of its nodes), by uuid.
    pub fn links(&self) -> BTreeMap<String, Link> {
        self.units
            .iter()
            .flat_map(|u| &u.nodes)
            .flat_map(|n| &n.links)
            .map(|l| (l.uuid.clone(), l.clone()))
            .collect()
    }

    /// All edges: repo_unit → unit, unit → variable, output → input.
    pub fn edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for unit in &self.units {
            edges.push(Edge {
                from: unit.repo_unit_uuid.clone(),
                to: unit.uuid.clone(),
                link: None,
            });
            for node in &unit.nodes {
                edges.push(Edge {
                    from: unit.uuid.clone(),
                    to: node.uuid.clone(),
                    link: None,
                });
            }
        }
        for (uuid, link) in self.links() {
            edges.push(Edge {
                from: link.output_uuid,
                to: link.input_uuid,
                link: Some(uuid),
            });
        }
        edges
    }

    pub fn unit(&self, uuid: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.uuid == uuid)
    }

    /// "unit · variable", how forms name a variable; `None` when the graph does not hold it.
    pub fn variable_label(&self, uuid: &str) -> Option<String> {
        let variable = self.variable(uuid)?;
        let unit = self
            .unit(&variable.unit_uuid)
            .map_or("?", |u| u.name.as_str());
        Some(format!("{unit} · {}", variable.short_name()))
    }

    pub fn repo_unit(&self, uuid: &str) -> Option<&RepoUnit> {
        self.repo_units.iter().find(|r| r.uuid == uuid)
    }

    pub fn variable(&self, uuid: &str) -> Option<&Variable> {
        self.units
            .iter()
            .flat_map(|u| &u.nodes)
            .find(|n| n.uuid == uuid)
    }

    /// Sets a variable's live value; false when the graph has no such variable.
    pub fn set_value(&mut self, node_uuid: &str, value: &str, at: &str) -> bool {
        let node = self
            .units
            .iter_mut()
            .flat_map(|u| u.nodes.iter_mut())
            .find(|n| n.uuid == node_uuid);
        match node {
            Some(node) => {
                node.last_value = Some(value.to_owned());
                node.last_value_at = Some(at.to_owned());
                true
            }
            None => false,
        }
    }

    /// Sets a unit's presence; false when the graph has no such unit.
    pub fn set_online(&mut self, unit_uuid: &str, online: bool) -> bool {
        match self.units.iter_mut().find(|u| u.uuid == unit_uuid) {
            Some(unit) => {
                unit.online = online;
                true
            }
            None => false,
        }
    }

    /// The uuids of every unit, for subscriptions.
    pub fn unit_uuids(&self) -> Vec<String> {
        self.units.iter().map(|u| u.uuid.clone()).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two units of one repo_unit, the first's output linked to the second's input.
    pub fn sample() -> Graph {
        let unit = |uuid: &str, out: &str, inp: &str, links: Vec<Link>| Unit {
            uuid: uuid.into(),
            name: format!("unit {uuid}"),
            visibility: "PUBLIC".into(),
            creator_uuid: "me".into(),
            repo_unit_uuid: "r1".into(),
            follows_default_branch: true,
            branch: None,
            commit: None,
            tag: None,
            target_commit: None,
            reported_commit: None,
            online: false,
            update_status: None,
            nodes: vec![
                Variable {
                    uuid: out.into(),
                    unit_uuid: uuid.into(),
                    kind: "OUTPUT".into(),
                    topic_name: "temp/pepeunit".into(),
                    visibility: "PUBLIC".into(),
                    last_value: None,
                    last_value_at: None,
                    links: links.clone(),
                },
                Variable {
                    uuid: inp.into(),
                    unit_uuid: uuid.into(),
                    kind: "INPUT".into(),
                    topic_name: "fan/pepeunit".into(),
                    visibility: "PUBLIC".into(),
                    last_value: None,
                    last_value_at: None,
                    links: vec![],
                },
            ],
        };
        let link = Link {
            uuid: "l1".into(),
            output_uuid: "o1".into(),
            input_uuid: "i2".into(),
        };
        Graph {
            repo_units: vec![RepoUnit {
                uuid: "r1".into(),
                creator_uuid: "me".into(),
                name: "firmware".into(),
                visibility: "PUBLIC".into(),
                clone_url: "https://example.com/f.git".into(),
                is_private_repository: false,
                default_branch: Some("main".into()),
                sync_period_seconds: 86_400,
                auto_sync: true,
                last_synced_at: None,
                last_sync_error: None,
            }],
            units: vec![
                unit("u1", "o1", "i1", vec![link.clone()]),
                unit("u2", "o2", "i2", vec![]),
            ],
        }
    }

    #[test]
    fn edges_cover_structure_and_each_link_once() {
        let graph = sample();
        let edges = graph.edges();
        // 2 repo_unit → unit, 4 unit → variable, 1 link.
        assert_eq!(edges.len(), 7);
        let links: Vec<_> = edges.iter().filter(|e| e.link.is_some()).collect();
        assert_eq!(links.len(), 1);
        assert_eq!((links[0].from.as_str(), links[0].to.as_str()), ("o1", "i2"));
    }

    #[test]
    fn live_values_and_presence_land_on_their_nodes() {
        let mut graph = sample();
        assert!(graph.set_value("o1", "21.5", "2026-01-01T00:00:00Z"));
        assert_eq!(
            graph.variable("o1").and_then(|v| v.last_value.as_deref()),
            Some("21.5")
        );
        assert!(!graph.set_value("nope", "1", "t"));
        assert!(graph.set_online("u2", true));
        assert!(graph.unit("u2").is_some_and(|u| u.online));
    }

    #[test]
    fn short_names_drop_the_pepeunit_suffix() {
        let graph = sample();
        assert_eq!(graph.variable("o1").map(Variable::short_name), Some("temp"));
    }

    #[test]
    fn variables_are_labelled_with_their_unit() {
        let graph = sample();
        let unit = &graph.variable("o1").unwrap().unit_uuid;
        let name = &graph.unit(unit).unwrap().name;
        assert_eq!(graph.variable_label("o1"), Some(format!("{name} · temp")));
        assert_eq!(graph.variable_label("missing"), None);
    }
}
