//! The session settings a dump changes, as the gate passes them: a part of a dump restored in a
//! session of its own must leave that session as the next part's session begins.

use super::allow::constant_text;
use pg_query::protobuf as pb;
use pg_query::NodeEnum;

/// The session setting a statement the gate passed changes, and to what: `SET name = value`
/// (`RESET` for a reset or `DEFAULT`), or `SELECT pg_catalog.set_config('search_path', value, …)`.
pub(super) fn setting_changed(stmt: &NodeEnum) -> Option<(String, String)> {
    let set = pb::VariableSetKind::VarSetValue as i32;
    match stmt {
        NodeEnum::VariableSetStmt(s) => {
            let value = match s.args.as_slice() {
                [one] if s.kind == set => constant_text(one).unwrap_or_else(|| "(not a constant)".into()),
                [] if s.kind == set => String::new(),
                _ if s.kind == set => "(several values)".into(),
                _ => "RESET".into(),
            };
            Some((s.name.clone(), value))
        }
        NodeEnum::SelectStmt(s) => {
            let f = called(s)?;
            let named = f.funcname.last().and_then(|n| match &n.node {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            });
            (named == Some("set_config")).then(|| {
                let value = f.args.get(1).and_then(constant_text).unwrap_or_else(|| "(not a constant)".into());
                ("search_path".to_string(), value)
            })
        }
        // A temporary object lives only in the session that made it.
        NodeEnum::CreateStmt(c) if c.relation.as_ref().is_some_and(|r| r.relpersistence == "t") => {
            Some(("temporary object".into(), String::new()))
        }
        NodeEnum::ViewStmt(v) if v.view.as_ref().is_some_and(|r| r.relpersistence == "t") => {
            Some(("temporary object".into(), String::new()))
        }
        NodeEnum::CreateSeqStmt(q) if q.sequence.as_ref().is_some_and(|r| r.relpersistence == "t") => {
            Some(("temporary object".into(), String::new()))
        }
        _ => None,
    }
}

/// The function a `SELECT f(…)` or `SELECT * FROM f(…)` calls.
fn called(s: &pb::SelectStmt) -> Option<&pb::FuncCall> {
    let target = match s.target_list.first().and_then(|t| t.node.as_ref()) {
        Some(NodeEnum::ResTarget(r)) => r.val.as_deref().and_then(|v| v.node.as_ref()),
        _ => None,
    };
    if let Some(NodeEnum::FuncCall(f)) = target {
        return Some(f);
    }
    let Some(NodeEnum::RangeFunction(r)) = s.from_clause.first().and_then(|f| f.node.as_ref()) else {
        return None;
    };
    match r.functions.first().and_then(|f| f.node.as_ref()) {
        Some(NodeEnum::List(l)) => match l.items.first().and_then(|i| i.node.as_ref()) {
            Some(NodeEnum::FuncCall(f)) => Some(f),
            _ => None,
        },
        _ => None,
    }
}
