//! The names an org uses on its NATS server.

use lemming_engine::settings::Cluster;

/// The org's stream, subjects and this node's consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The stream: `LEMMING_<NAME>`, the org's name in capitals.
    pub stream: String,
    /// The subject prefix of every inbox: `lemming.<name>.inbox.`.
    pub prefix: String,
    /// This node's durable consumer: `node_<node>`.
    pub consumer: String,
    /// The key-value bucket of the nodes' leases: `lemming_<name>_leases`.
    pub leases: String,
    /// The key-value bucket of each node's last turn: `lemming_<name>_status`.
    pub status: String,
}

impl Names {
    /// The names of `cluster`'s org, for the node `node`.
    pub fn new(cluster: &Cluster, node: &str) -> Names {
        let org = cluster.name.as_str();
        Names {
            stream: format!("LEMMING_{}", org.to_ascii_uppercase()),
            prefix: format!("lemming.{org}.inbox."),
            consumer: format!("node_{node}"),
            leases: format!("lemming_{org}_leases"),
            status: format!("lemming_{org}_status"),
        }
    }

    /// The subject of `agent`'s inbox.
    pub fn inbox(&self, agent: &str) -> String {
        format!("{}{agent}", self.prefix)
    }

    /// Every inbox of the org: what the stream keeps.
    pub fn every_inbox(&self) -> String {
        format!("{}>", self.prefix)
    }

    /// The agent whose inbox `subject` is, if it is one of the org's.
    pub fn agent_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.strip_prefix(&self.prefix).filter(|a| !a.is_empty() && !a.contains('.'))
    }
}

/// The id JetStream drops a repeated publish by: one per message and recipient.
pub fn msg_id(id: &str, to: &str) -> String {
    format!("{id}:{to}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lemming_engine::name::AgentName;

    #[test]
    fn an_org_s_names_follow_its_name_and_the_node_s() {
        let c = Cluster {
            name: AgentName::new("acme_2").unwrap(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nodes: vec![AgentName::new("a").unwrap()],
            replicas: 1,
            dedupe_window_secs: 120.0,
        };
        let n = Names::new(&c, "b-1");
        assert_eq!((n.stream.as_str(), n.consumer.as_str()), ("LEMMING_ACME_2", "node_b-1"));
        assert_eq!((n.leases.as_str(), n.status.as_str()), ("lemming_acme_2_leases", "lemming_acme_2_status"));
        assert_eq!(n.inbox("planner"), "lemming.acme_2.inbox.planner");
        assert_eq!(n.every_inbox(), "lemming.acme_2.inbox.>");
        assert_eq!(n.agent_of("lemming.acme_2.inbox.planner"), Some("planner"));
        for other in ["lemming.acme.inbox.planner", "lemming.acme_2.inbox.", "lemming.acme_2.inbox.a.b"] {
            assert_eq!(n.agent_of(other), None, "{other}");
        }
        assert_eq!(msg_id("m1", "planner"), "m1:planner");
    }
}
