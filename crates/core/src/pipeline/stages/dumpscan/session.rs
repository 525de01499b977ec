//! The session settings a dump changes, as the gate passes them: a part of a dump restored in a
//! session of its own must leave that session as the next part's session begins.

use super::allow::constant_text;
use pg_query::protobuf as pb;
use pg_query::NodeEnum;

/// The session setting a statement the gate passed changes, and to what: `SET name = value`
/// (`RESET` for a reset or `DEFAULT`), or `SELECT pg_catalog.set_config('search_path', value, …)`.
pub(super) fn setting_changed(stmt: &NodeEnum) -> Option<(String, String)> {
    match stmt {
        NodeEnum::VariableSetStmt(s) => {
            let value = match s.args.as_slice() {
                [one] if s.kind == pb::VariableSetKind::VarSetValue as i32 => constant_text(one).unwrap_or_default(),
                _ if s.kind == pb::VariableSetKind::VarSetValue as i32 => String::new(),
                _ => "RESET".into(),
            };
            Some((s.name.clone(), value))
        }
        NodeEnum::SelectStmt(s) => {
            let Some(NodeEnum::ResTarget(r)) = s.target_list.first().and_then(|t| t.node.as_ref()) else {
                return None;
            };
            let Some(NodeEnum::FuncCall(f)) = r.val.as_deref().and_then(|v| v.node.as_ref()) else {
                return None;
            };
            let named = f.funcname.last().and_then(|n| match &n.node {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            });
            (named == Some("set_config")).then(|| {
                let value = f.args.get(1).and_then(constant_text).unwrap_or_default();
                ("search_path".to_string(), value)
            })
        }
        _ => None,
    }
}
