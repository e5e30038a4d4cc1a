//! The chart view (`GET /api/chart`): every agent as a node, with its state,
//! and an edge from A to B wherever the org chart lets A write to B (B is in
//! A's `send_to` and A is in B's `read_from`).

use serde::Serialize;

use super::status::{status, AgentState, Unreadable};
use crate::error::PathError;
use crate::org::Org;

/// One agent of the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartNode {
    /// The name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// The model key (`null` for a person).
    pub model: Option<String>,
    /// What it can do now, as `status` says it.
    pub state: AgentState,
    /// Credits left.
    pub credits_left: f64,
    /// Unread messages.
    pub unread: usize,
    /// The last turn it ran on.
    pub last_run_turn: Option<u64>,
}

/// A path mail may take.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ChartEdge {
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
}

/// The org chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartView {
    /// Every agent folder, valid or not (a held agent has no edges), by name.
    pub nodes: Vec<ChartNode>,
    /// Every allowed (sender, recipient), sorted; no agent writes to itself.
    pub edges: Vec<ChartEdge>,
    /// State files that could not be read; the rest is still shown.
    pub unreadable: Vec<Unreadable>,
}

/// The chart of `org`, with each agent's state as [`status`] gives it.
pub fn chart(org: &Org) -> Result<ChartView, PathError> {
    let s = status(org)?;
    let nodes = s
        .agents
        .into_iter()
        .map(|a| ChartNode {
            name: a.name,
            title: a.title,
            model: a.model,
            state: a.state,
            credits_left: a.credits.left,
            unread: a.unread,
            last_run_turn: a.last_run_turn,
        })
        .collect();
    let c = org.chart();
    let mut edges: Vec<ChartEdge> = org
        .agents
        .keys()
        .flat_map(|from| c.reachable(from.as_str()).into_iter().map(|to| ChartEdge { from: from.to_string(), to }))
        .collect();
    edges.sort();
    Ok(ChartView { nodes, edges, unreadable: s.unreadable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::edit;
    use crate::views::testing::plain_org;

    #[test]
    fn an_edge_is_where_both_sides_allow_and_every_folder_is_a_node() {
        let (dir, org) = plain_org();
        let v = chart(&org).unwrap();
        let names: Vec<&str> = v.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["coder_01", "hr", "human", "janitor", "manager", "planner"]);
        let has = |v: &ChartView, f: &str, t: &str| v.edges.iter().any(|e| e.from == f && e.to == t);
        assert!(has(&v, "human", "manager") && has(&v, "manager", "human"));
        for e in &v.edges {
            assert!(org.chart().check(&e.from, &e.to).is_ok(), "{e:?}");
            assert_ne!(e.from, e.to);
        }
        let all: usize = org.agents.keys().map(|a| org.chart().reachable(a.as_str()).len()).sum();
        assert_eq!(v.edges.len(), all);
        let human = v.nodes.iter().find(|n| n.name == "human").unwrap();
        assert_eq!((human.state, human.model.as_deref()), (AgentState::Human, None));
        let json = serde_json::to_value(&v).unwrap();
        assert!(json["edges"][0]["from"].is_string() && json["edges"][0]["to"].is_string());
        assert!(json["nodes"][0]["state"].is_string());

        // One side is not enough: the manager stops reading the human.
        edit(dir.path(), "agents/manager/resume.toml", "read_from = [\"human\", ", "read_from = [");
        let v = chart(&Org::load(dir.path()).unwrap()).unwrap();
        assert!(!has(&v, "human", "manager") && has(&v, "manager", "human"));
        // A held agent is a node with no edges.
        std::fs::write(dir.path().join("agents/janitor/resume.toml"), "name = ").unwrap();
        let v = chart(&Org::load(dir.path()).unwrap()).unwrap();
        let janitor = v.nodes.iter().find(|n| n.name == "janitor").unwrap();
        assert_eq!(janitor.state, AgentState::Invalid);
        assert!(!v.edges.iter().any(|e| e.from == "janitor" || e.to == "janitor"));
    }
}
