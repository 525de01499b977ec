//! The parts of a qualified name as PostgreSQL's parser gives them: a list of string nodes.

use pg_query::protobuf as pb;
use pg_query::NodeEnum;

/// The string nodes among `nodes` (a qualified name's parts), in order.
pub fn node_strings(nodes: &[pb::Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|i| match &i.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

/// The strings of a list node (`schema.table.column` and the like); empty for anything else.
pub fn list_strings(node: Option<&pb::Node>) -> Vec<String> {
    match node.and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::List(list)) => node_strings(&list.items),
        _ => Vec::new(),
    }
}
