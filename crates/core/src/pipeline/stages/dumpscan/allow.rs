//! What a restore lets through: one top-level statement of a dump, as PostgreSQL's own parser
//! (libpg_query) read it, judged against an explicit allowlist of what `pg_dump` writes in a plain
//! dump of one database. Anything else — transaction control, `ALTER SYSTEM`, `COPY` to or from a
//! file or program, database and role commands, `DO`, `CALL`, `LOAD`, a query that calls an
//! arbitrary function, a setting that changes how the rest of the stream is lexed — is refused: a
//! backup is data, and pgvigil restores only what a backup can contain.
//!
//! The list follows pg_dump 13–18 (`src/bin/pg_dump/pg_dump.c`, `pg_backup_archiver.c`).

use pg_query::protobuf::{self as pb, a_const::Val};
use pg_query::NodeEnum;
use std::collections::BTreeSet;

/// What the restore does with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Passed to psql.
    Pass,
    /// `COPY … FROM stdin;`: data lines follow, up to `\.`.
    Copy,
    /// `BEGIN;`, which pg_dump writes before large objects.
    Begin,
    /// `COMMIT;`, which closes pg_dump's large-object block.
    Commit,
    /// An ownership statement (`ALTER … OWNER TO`, `SET`/`RESET SESSION AUTHORIZATION`).
    Ownership,
    /// A privilege statement (`GRANT`, `REVOKE`, `ALTER DEFAULT PRIVILEGES`).
    Grant,
    /// A statement about a subscription (`CREATE SUBSCRIPTION … connect = false`, its owner,
    /// comment or security label): never restored. A subscription ties its database to a
    /// publisher, only a superuser (or, from PostgreSQL 16, a member of `pg_create_subscription`)
    /// may create one, and PostgreSQL refuses to drop a database that holds one: a scratch
    /// database could not be dropped after the verification.
    Subscription,
    /// Refused: what the statement is, in a few words (never its text, which may hold data).
    Refuse(String),
}

/// Settings pg_dump writes with `SET` (the values are checked where they matter).
const SETTINGS: &str = "statement_timeout lock_timeout idle_in_transaction_session_timeout transaction_timeout \
    client_encoding standard_conforming_strings check_function_bodies xmloption client_min_messages \
    row_security default_tablespace default_table_access_method default_with_oids search_path \
    escape_string_warning role session_authorization";

/// Functions pg_dump calls with `SELECT` (always schema-qualified), with constants only.
const FUNCTIONS: &str = "set_config setval lo_create lo_open lowrite lo_close pg_restore_relation_stats pg_restore_attribute_stats";

/// Types a constant may be cast to in those calls.
const CAST_TYPES: &str = "regclass oid int2 int4 int8 integer bigint smallint bool boolean text name \
    float4 float8 real numeric bytea char bpchar varchar anyarray";

pub(super) use crate::pipeline::stages::encoding::{encoding_key, safe_encoding};

/// The roles a dump may switch to: those the manifest names (unquoted).
#[derive(Debug, Clone, Default)]
pub struct KnownRoles(pub BTreeSet<String>);

fn refuse(what: impl Into<String>) -> Decision {
    Decision::Refuse(what.into())
}

/// Judges one parsed top-level statement.
pub(super) fn judge(stmt: &NodeEnum, roles: &KnownRoles) -> Decision {
    match stmt {
        NodeEnum::VariableSetStmt(s) => setting(s, roles),
        NodeEnum::SelectStmt(s) => select(s),
        NodeEnum::CopyStmt(c) => copy(c),
        NodeEnum::TransactionStmt(t) => transaction(t),
        NodeEnum::CreateTableAsStmt(c) => {
            // Only `CREATE MATERIALIZED VIEW … WITH NO DATA` (the data comes from REFRESH).
            let matview = c.objtype == pb::ObjectType::ObjectMatview as i32;
            if matview && c.into.as_ref().is_some_and(|i| i.skip_data) {
                Decision::Pass
            } else {
                refuse("CREATE TABLE AS (pg_dump writes none)")
            }
        }
        NodeEnum::CreateSchemaStmt(s) if s.schema_elts.is_empty() => Decision::Pass,
        NodeEnum::CreateSchemaStmt(_) => refuse("CREATE SCHEMA with embedded statements"),
        NodeEnum::CreateSubscriptionStmt(s) => {
            // pg_dump writes subscriptions that never connect; one that connects would reach any
            // server the backup names.
            let no_connect = s.options.iter().any(|o| match &o.node {
                Some(NodeEnum::DefElem(d)) => d.defname == "connect" && d.arg.as_deref().is_some_and(is_false),
                _ => false,
            });
            if no_connect {
                Decision::Subscription
            } else {
                refuse("CREATE SUBSCRIPTION without connect = false")
            }
        }
        // Objects of the whole server (databases, tablespaces, roles, settings) are never in a
        // dump of one database: owning, granting, commenting or labelling them reaches beyond it.
        NodeEnum::AlterOwnerStmt(a) if cluster_wide(a.object_type) => refuse(format!("ALTER … OWNER of {}", kind(a.object_type))),
        NodeEnum::GrantStmt(g) if cluster_wide(g.objtype) => refuse(format!("GRANT or REVOKE on {}", kind(g.objtype))),
        NodeEnum::CommentStmt(c) if cluster_wide(c.objtype) => refuse(format!("COMMENT ON {}", kind(c.objtype))),
        NodeEnum::SecLabelStmt(l) if cluster_wide(l.objtype) => refuse(format!("SECURITY LABEL ON {}", kind(l.objtype))),
        NodeEnum::AlterOwnerStmt(a) if a.object_type == pb::ObjectType::ObjectSubscription as i32 => Decision::Subscription,
        NodeEnum::CommentStmt(c) if c.objtype == pb::ObjectType::ObjectSubscription as i32 => Decision::Subscription,
        NodeEnum::SecLabelStmt(l) if l.objtype == pb::ObjectType::ObjectSubscription as i32 => Decision::Subscription,
        NodeEnum::AlterOwnerStmt(_) => Decision::Ownership,
        NodeEnum::AlterTableStmt(a) if !a.cmds.is_empty() && a.cmds.iter().all(is_owner_change) => Decision::Ownership,
        NodeEnum::GrantStmt(_) | NodeEnum::AlterDefaultPrivilegesStmt(_) => Decision::Grant,
        // Definitions: their bodies and expressions are stored, not run, when they are created.
        NodeEnum::AlterTableStmt(_)
        | NodeEnum::CreateStmt(_)
        | NodeEnum::CreateForeignTableStmt(_)
        | NodeEnum::CreateSeqStmt(_)
        | NodeEnum::AlterSeqStmt(_)
        | NodeEnum::ViewStmt(_)
        | NodeEnum::RefreshMatViewStmt(_)
        | NodeEnum::IndexStmt(_)
        | NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::AlterFunctionStmt(_)
        | NodeEnum::DefineStmt(_)
        | NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::AlterEnumStmt(_)
        | NodeEnum::CreateRangeStmt(_)
        | NodeEnum::CreateDomainStmt(_)
        | NodeEnum::AlterDomainStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::CreateCastStmt(_)
        | NodeEnum::CreateConversionStmt(_)
        | NodeEnum::CreateOpClassStmt(_)
        | NodeEnum::CreateOpFamilyStmt(_)
        | NodeEnum::AlterOpFamilyStmt(_)
        | NodeEnum::CreateTrigStmt(_)
        | NodeEnum::CreateEventTrigStmt(_)
        | NodeEnum::AlterEventTrigStmt(_)
        | NodeEnum::RuleStmt(_)
        | NodeEnum::CreatePolicyStmt(_)
        | NodeEnum::CreatePublicationStmt(_)
        | NodeEnum::AlterPublicationStmt(_)
        | NodeEnum::CreateStatsStmt(_)
        | NodeEnum::AlterStatsStmt(_)
        | NodeEnum::CreateFdwStmt(_)
        | NodeEnum::CreateForeignServerStmt(_)
        | NodeEnum::CreateUserMappingStmt(_)
        | NodeEnum::CreateAmStmt(_)
        | NodeEnum::CreateTransformStmt(_)
        | NodeEnum::CreatePlangStmt(_)
        | NodeEnum::AlterTsconfigurationStmt(_)
        | NodeEnum::AlterTsdictionaryStmt(_)
        | NodeEnum::AlterObjectDependsStmt(_)
        | NodeEnum::CommentStmt(_)
        | NodeEnum::SecLabelStmt(_) => Decision::Pass,
        other => refuse(statement_name(other)),
    }
}

/// A name for a refused statement kind, for the verdict.
fn statement_name(stmt: &NodeEnum) -> String {
    let name = match stmt {
        NodeEnum::AlterSystemStmt(_) => "ALTER SYSTEM",
        NodeEnum::CreatedbStmt(_) => "CREATE DATABASE",
        NodeEnum::DropdbStmt(_) => "DROP DATABASE",
        NodeEnum::AlterDatabaseStmt(_) | NodeEnum::AlterDatabaseSetStmt(_) | NodeEnum::AlterDatabaseRefreshCollStmt(_) => "ALTER DATABASE",
        NodeEnum::CreateRoleStmt(_) => "CREATE ROLE",
        NodeEnum::AlterRoleStmt(_) | NodeEnum::AlterRoleSetStmt(_) => "ALTER ROLE",
        NodeEnum::DropRoleStmt(_) => "DROP ROLE",
        NodeEnum::GrantRoleStmt(_) => "GRANT of a role",
        NodeEnum::LoadStmt(_) => "LOAD",
        NodeEnum::DoStmt(_) => "DO",
        NodeEnum::CallStmt(_) => "CALL",
        NodeEnum::DropStmt(_) => "DROP",
        NodeEnum::TruncateStmt(_) => "TRUNCATE",
        NodeEnum::InsertStmt(_) => "INSERT",
        NodeEnum::UpdateStmt(_) => "UPDATE",
        NodeEnum::DeleteStmt(_) => "DELETE",
        NodeEnum::MergeStmt(_) => "MERGE",
        NodeEnum::CreateTableSpaceStmt(_) | NodeEnum::DropTableSpaceStmt(_) => "a TABLESPACE command",
        NodeEnum::VacuumStmt(_) => "VACUUM or ANALYZE",
        NodeEnum::CheckPointStmt(_) => "CHECKPOINT",
        NodeEnum::PrepareStmt(_) | NodeEnum::ExecuteStmt(_) => "PREPARE or EXECUTE",
        NodeEnum::NotifyStmt(_) | NodeEnum::ListenStmt(_) => "NOTIFY or LISTEN",
        NodeEnum::LockStmt(_) => "LOCK",
        NodeEnum::ConstraintsSetStmt(_) => "SET CONSTRAINTS",
        NodeEnum::DiscardStmt(_) => "DISCARD",
        NodeEnum::RenameStmt(_) => "a RENAME",
        NodeEnum::AlterObjectSchemaStmt(_) => "a SET SCHEMA",
        NodeEnum::AlterExtensionStmt(_) | NodeEnum::AlterExtensionContentsStmt(_) => "ALTER EXTENSION",
        NodeEnum::DropOwnedStmt(_) | NodeEnum::ReassignOwnedStmt(_) => "DROP OWNED or REASSIGN OWNED",
        NodeEnum::ImportForeignSchemaStmt(_) => "IMPORT FOREIGN SCHEMA",
        NodeEnum::AlterSubscriptionStmt(_) => "ALTER SUBSCRIPTION",
        _ => "a statement pg_dump does not write",
    };
    name.to_string()
}

/// Whether an object type belongs to the whole server rather than to one database.
fn cluster_wide(objtype: i32) -> bool {
    use pb::ObjectType as O;
    [O::ObjectDatabase, O::ObjectTablespace, O::ObjectRole, O::ObjectParameterAcl]
        .iter()
        .any(|o| *o as i32 == objtype)
}

/// The kind of a server-wide object, for a message.
fn kind(objtype: i32) -> &'static str {
    use pb::ObjectType as O;
    match O::try_from(objtype) {
        Ok(O::ObjectDatabase) => "a database",
        Ok(O::ObjectTablespace) => "a tablespace",
        Ok(O::ObjectRole) => "a role",
        Ok(O::ObjectParameterAcl) => "a server setting",
        _ => "a server-wide object",
    }
}

fn is_owner_change(cmd: &pb::Node) -> bool {
    matches!(&cmd.node, Some(NodeEnum::AlterTableCmd(c)) if c.subtype == pb::AlterTableType::AtChangeOwner as i32)
}

fn is_false(n: &pb::Node) -> bool {
    match &n.node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(Val::Boolval(b)) => !b.boolval,
            Some(Val::Sval(s)) => matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0"),
            Some(Val::Ival(i)) => i.ival == 0,
            _ => false,
        },
        Some(NodeEnum::String(s)) => matches!(s.sval.to_ascii_lowercase().as_str(), "false" | "off" | "no"),
        _ => false,
    }
}

/// The text of a constant argument (`'x'`, `x`, `1`), if it is one.
pub(super) fn constant_text(n: &pb::Node) -> Option<String> {
    match &n.node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(Val::Sval(s)) => Some(s.sval.clone()),
            Some(Val::Ival(i)) => Some(i.ival.to_string()),
            Some(Val::Fval(f)) => Some(f.fval.clone()),
            Some(Val::Boolval(b)) => Some(b.boolval.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn setting(s: &pb::VariableSetStmt, roles: &KnownRoles) -> Decision {
    let reset = s.kind == pb::VariableSetKind::VarReset as i32
        // `SET SESSION AUTHORIZATION DEFAULT` (pg_dump's --use-set-session-authorization).
        || (s.kind == pb::VariableSetKind::VarSetDefault as i32 && s.name == "session_authorization");
    let set = s.kind == pb::VariableSetKind::VarSetValue as i32;
    if !(set || reset) || !SETTINGS.split_whitespace().any(|n| n == s.name) {
        let name = if s.name.is_empty() { "a setting" } else { s.name.as_str() };
        return refuse(format!("SET {name} (pg_dump sets no such thing)"));
    }
    if s.is_local {
        return refuse(format!("SET LOCAL {}", s.name));
    }
    if s.name == "session_authorization" && reset {
        return Decision::Ownership;
    }
    if reset {
        return if s.name == "role" {
            Decision::Pass
        } else {
            refuse(format!("RESET {}", s.name))
        };
    }
    let value = match s.args.as_slice() {
        [one] => constant_text(one),
        _ if s.name == "search_path" => Some(String::new()),
        _ => None,
    };
    let Some(value) = value else {
        return refuse(format!("SET {} to something other than one constant", s.name));
    };
    match s.name.as_str() {
        // pg_dump turns every timeout off; another value could end the restore's session.
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" | "transaction_timeout" if value != "0" => {
            refuse(format!("SET {} to {} (pg_dump sets 0)", s.name, shown(&value)))
        }
        "standard_conforming_strings" if !matches!(value.to_ascii_lowercase().as_str(), "on" | "true") => {
            refuse("SET standard_conforming_strings to off (it changes how the rest of the dump is read)")
        }
        "client_encoding" if !safe_encoding(&value) => refuse(format!(
            "SET client_encoding to {} (an encoding that psql and the server read differently)",
            shown(&value)
        )),
        "role" | "session_authorization" if !roles.0.contains(&value) => refuse(format!(
            "SET {} to {}, a role the backup's manifest does not name",
            if s.name == "role" { "ROLE" } else { "SESSION AUTHORIZATION" },
            shown(&value)
        )),
        "session_authorization" => Decision::Ownership,
        _ => Decision::Pass,
    }
}

/// A name from the dump, shortened for a message.
fn shown(s: &str) -> String {
    let short: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
    format!("\"{short}\"")
}

/// `SELECT pg_catalog.f(constants…)` or `SELECT * FROM pg_catalog.f(constants…)` for the
/// functions pg_dump calls; `set_config` only for `search_path`.
fn select(s: &pb::SelectStmt) -> Decision {
    let plain = s.distinct_clause.is_empty()
        && s.into_clause.is_none()
        && s.where_clause.is_none()
        && s.group_clause.is_empty()
        && s.having_clause.is_none()
        && s.window_clause.is_empty()
        && s.values_lists.is_empty()
        && s.sort_clause.is_empty()
        && s.limit_offset.is_none()
        && s.limit_count.is_none()
        && s.locking_clause.is_empty()
        && s.with_clause.is_none()
        && s.larg.is_none()
        && s.rarg.is_none();
    let call = match (s.target_list.as_slice(), s.from_clause.as_slice()) {
        ([target], []) => match &target.node {
            Some(NodeEnum::ResTarget(r)) => match r.val.as_deref().and_then(|v| v.node.as_ref()) {
                Some(NodeEnum::FuncCall(f)) => Some(f.as_ref()),
                _ => None,
            },
            _ => None,
        },
        ([target], [from]) if is_star(target) => match &from.node {
            Some(NodeEnum::RangeFunction(r)) if !r.lateral && !r.ordinality && !r.is_rowsfrom && r.coldeflist.is_empty() => {
                match r.functions.as_slice() {
                    [f] => match &f.node {
                        Some(NodeEnum::List(l)) => match l.items.first().and_then(|i| i.node.as_ref()) {
                            Some(NodeEnum::FuncCall(f)) => Some(f.as_ref()),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    };
    let Some(f) = call.filter(|_| plain) else {
        return refuse("a query (pg_dump writes SELECT only to call its own restore functions)");
    };
    let name = super::nodes::node_strings(&f.funcname);
    let known = name.len() == 2 && name[0] == "pg_catalog" && FUNCTIONS.split_whitespace().any(|f| f == name[1]);
    let simple = f.agg_order.is_empty() && f.agg_filter.is_none() && f.over.is_none() && !f.agg_star && !f.agg_distinct;
    if !known || !simple {
        let called = name.last().map_or("a function".to_string(), |n| shown(n));
        return refuse(format!("a query calling {called}"));
    }
    if !f.args.iter().all(is_constant) {
        return refuse(format!("a call of {} with something other than constants", name[1]));
    }
    if name[1] == "set_config" && f.args.first().and_then(constant_text).as_deref() != Some("search_path") {
        return refuse("set_config of a setting other than search_path");
    }
    Decision::Pass
}

fn is_star(target: &pb::Node) -> bool {
    let Some(NodeEnum::ResTarget(r)) = &target.node else { return false };
    match r.val.as_deref().and_then(|v| v.node.as_ref()) {
        Some(NodeEnum::ColumnRef(c)) => matches!(c.fields.as_slice(), [f] if matches!(f.node, Some(NodeEnum::AStar(_)))),
        _ => false,
    }
}

/// A constant, possibly cast to a built-in type (`'1'::integer`, `'{…}'::text[]`), or a
/// name–value pair list of such (`'version', '180000'::integer`).
fn is_constant(n: &pb::Node) -> bool {
    match &n.node {
        Some(NodeEnum::AConst(_)) => true,
        Some(NodeEnum::TypeCast(c)) => {
            let builtin = c.type_name.as_ref().is_some_and(|t| {
                let names: Vec<&str> = t
                    .names
                    .iter()
                    .filter_map(|n| match &n.node {
                        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                        _ => None,
                    })
                    .collect();
                match names.as_slice() {
                    [one] | ["pg_catalog", one] => CAST_TYPES.split_whitespace().any(|t| t == *one),
                    _ => false,
                }
            });
            builtin && c.arg.as_deref().is_some_and(is_constant)
        }
        _ => false,
    }
}

fn copy(c: &pb::CopyStmt) -> Decision {
    let plain =
        c.is_from && !c.is_program && c.filename.is_empty() && c.query.is_none() && c.where_clause.is_none() && c.options.is_empty();
    if plain && c.relation.is_some() {
        Decision::Copy
    } else if c.is_program {
        refuse("COPY to or from a program")
    } else if !c.filename.is_empty() {
        refuse("COPY to or from a file on the server")
    } else {
        refuse("a COPY other than pg_dump's COPY … FROM stdin")
    }
}

fn transaction(t: &pb::TransactionStmt) -> Decision {
    use pb::TransactionStmtKind as K;
    let kind = K::try_from(t.kind).unwrap_or(K::Undefined);
    match kind {
        K::TransStmtBegin if t.options.is_empty() => Decision::Begin,
        K::TransStmtCommit if !t.chain => Decision::Commit,
        _ => refuse(format!(
            "{} (transaction control, which would end or change the restore's transaction)",
            match kind {
                K::TransStmtBegin | K::TransStmtStart => "BEGIN or START TRANSACTION",
                K::TransStmtCommit => "COMMIT AND CHAIN",
                K::TransStmtRollback => "ROLLBACK",
                K::TransStmtSavepoint => "SAVEPOINT",
                K::TransStmtRelease => "RELEASE SAVEPOINT",
                K::TransStmtRollbackTo => "ROLLBACK TO SAVEPOINT",
                K::TransStmtPrepare => "PREPARE TRANSACTION",
                K::TransStmtCommitPrepared => "COMMIT PREPARED",
                K::TransStmtRollbackPrepared => "ROLLBACK PREPARED",
                K::Undefined => "a transaction command",
            }
        )),
    }
}

#[cfg(test)]
#[path = "allow_tests.rs"]
mod tests;
