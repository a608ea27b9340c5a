//! Search and filters of the canvas: whose nodes (mine, this instance's, public) and which kinds.

use std::collections::HashSet;

use crate::model::{Graph, NodeKind};

/// Whose nodes to show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Everything the user may see.
    #[default]
    All,
    /// Created by the user.
    Mine,
    /// Visible to every user of this instance (`INTERNAL`).
    Instance,
    /// Visible to everyone (`PUBLIC`).
    Public,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::All, Scope::Mine, Scope::Instance, Scope::Public];

    pub fn label(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Mine => "mine",
            Scope::Instance => "instance",
            Scope::Public => "public",
        }
    }

    pub fn parse(label: &str) -> Scope {
        Scope::ALL
            .into_iter()
            .find(|s| s.label() == label)
            .unwrap_or_default()
    }

    fn admits(self, me: &str, creator: &str, visibility: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Mine => creator == me,
            Scope::Instance => visibility == "INTERNAL",
            Scope::Public => visibility == "PUBLIC",
        }
    }
}

/// The user's current filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub search: String,
    pub scope: Scope,
    pub kinds: HashSet<NodeKind>,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            search: String::new(),
            scope: Scope::All,
            kinds: [
                NodeKind::RepoUnit,
                NodeKind::Unit,
                NodeKind::Input,
                NodeKind::Output,
            ]
            .into(),
        }
    }
}

impl Filter {
    /// The uuids of the nodes to draw. A unit matched by the search brings its variables along, and a
    /// variable matched brings its unit, so what is found is never shown without its context.
    pub fn visible(&self, graph: &Graph, me: &str) -> HashSet<String> {
        let needle = self.search.trim().to_lowercase();
        let hit = |text: &str| needle.is_empty() || text.to_lowercase().contains(&needle);
        let mut shown = HashSet::new();
        for repo in &graph.repo_units {
            let in_scope = self.scope.admits(me, &repo.creator_uuid, &repo.visibility);
            let units_hit = graph
                .units
                .iter()
                .any(|u| u.repo_unit_uuid == repo.uuid && hit(&u.name));
            if in_scope
                && self.kinds.contains(&NodeKind::RepoUnit)
                && (hit(&repo.name) || units_hit)
            {
                shown.insert(repo.uuid.clone());
            }
        }
        for unit in &graph.units {
            if !self.scope.admits(me, &unit.creator_uuid, &unit.visibility) {
                continue;
            }
            let unit_hit = hit(&unit.name);
            let mut any_variable = false;
            for node in &unit.nodes {
                let kind = if node.is_input() {
                    NodeKind::Input
                } else {
                    NodeKind::Output
                };
                if self.kinds.contains(&kind) && (unit_hit || hit(&node.topic_name)) {
                    shown.insert(node.uuid.clone());
                    any_variable = true;
                }
            }
            if self.kinds.contains(&NodeKind::Unit) && (unit_hit || any_variable) {
                shown.insert(unit.uuid.clone());
            }
        }
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::sample;

    #[test]
    fn everything_shows_by_default() {
        let graph = sample();
        assert_eq!(Filter::default().visible(&graph, "me").len(), 7);
    }

    #[test]
    fn search_keeps_context() {
        let graph = sample();
        let filter = Filter {
            search: "unit u2".into(),
            ..Filter::default()
        };
        let shown = filter.visible(&graph, "me");
        assert!(shown.contains("u2") && shown.contains("o2") && shown.contains("r1"));
        assert!(!shown.contains("u1"));
        let filter = Filter {
            search: "FAN".into(),
            ..Filter::default()
        };
        let shown = filter.visible(&graph, "me");
        assert!(shown.contains("i1") && shown.contains("u1") && !shown.contains("o1"));
    }

    #[test]
    fn scope_and_kinds_narrow() {
        let graph = sample();
        let mine = Filter {
            scope: Scope::Mine,
            ..Filter::default()
        };
        assert!(mine.visible(&graph, "someone else").is_empty());
        let instance = Filter {
            scope: Scope::Instance,
            ..Filter::default()
        };
        assert!(instance.visible(&graph, "me").is_empty());
        let only_units = Filter {
            kinds: [NodeKind::Unit].into(),
            ..Filter::default()
        };
        assert_eq!(only_units.visible(&graph, "me").len(), 2);
        assert_eq!(Scope::parse("public"), Scope::Public);
    }
}
