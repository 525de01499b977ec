//! Which statements of a dump rebuild one table: its definition, its partitions, its sequences,
//! defaults, indexes, constraints, triggers, policies, extended statistics, comments, security
//! labels and grants, and its sequences' values. Read with PostgreSQL's own parser; everything else of the dump is left out.
//!
//! The table's *family* — the relations the restore rebuilds — grows from the table itself:
//! partitions attached to a member (and theirs), and sequences owned by a member or made for an
//! identity column. A statement is kept when its subject (the relation it creates or alters, the
//! table an index, trigger or policy is on, what a comment or grant is about) is in the family.

use super::names::{restage, Name};
use crate::pipeline::stages::dumpscan::nodes::{list_strings as strings, node_strings};
use crate::records::manifest::TocEntry;
use pg_query::protobuf::{self as pb, AlterTableType, ConstrType, ObjectType};
use pg_query::NodeEnum;
use std::collections::BTreeSet;

/// The relations a one-table restore rebuilds, and the indexes made on them.
#[derive(Debug, Clone)]
pub struct Family {
    /// The table asked for.
    pub root: Name,
    /// It, its partitions (at any depth) and its sequences.
    pub relations: BTreeSet<Name>,
    /// Indexes (and the indexes of keys and unique constraints) made on them, in their schema.
    pub indexes: BTreeSet<Name>,
    /// Extended statistics objects (`CREATE STATISTICS`) on one of them, in their own schema.
    pub statistics: BTreeSet<Name>,
    /// Foreign keys to tables outside the family are kept (`--replace`: the table goes back where
    /// it was) or left out (a copy under another name, which should not tie other tables' rows).
    pub outside_keys: bool,
    /// The foreign keys left out, by table and constraint name.
    pub keys_left_out: BTreeSet<(Name, String)>,
}

/// What becomes of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Sent, with the family's references pointed at the staging schema.
    Keep(String),
    /// Not about the table.
    Skip,
    /// About the table, but left out on purpose: what, for the operator.
    LeftOut(String),
    /// About the table, in a form pg_dump never writes: the restore stops (the backup's fault).
    Refuse(String),
}

/// What [`Choice::Refuse`] says of a statement about the table written in a form the restaging
/// could misread (and pg_dump never writes).
pub const UNUSUAL: &str = "a statement about the table that writes a name or string with Unicode escapes (U&), an escape string (E'') or dollar quotes, which pg_dump never writes there";

/// A relation's name as a statement wrote it: `schema.name`, never with a database in front
/// (`db.schema.name` is not restaged: such a statement is never taken as the family's).
fn name(rv: Option<&pb::RangeVar>) -> Option<Name> {
    let rv = rv?;
    (!rv.schemaname.is_empty() && rv.catalogname.is_empty()).then(|| Name::new(&rv.schemaname, &rv.relname))
}

/// The first two strings of a list as a name.
fn pair(parts: &[String]) -> Option<Name> {
    match parts {
        [schema, name, ..] => Some(Name::new(schema, name)),
        _ => None,
    }
}

/// The statements of one parsed text.
fn statements(parsed: &pg_query::ParseResult) -> impl Iterator<Item = &NodeEnum> {
    parsed.protobuf.stmts.iter().filter_map(|s| s.stmt.as_ref()?.node.as_ref())
}

fn commands(alter: &pb::AlterTableStmt) -> impl Iterator<Item = &pb::AlterTableCmd> {
    alter.cmds.iter().filter_map(|c| match &c.node {
        Some(NodeEnum::AlterTableCmd(cmd)) => Some(cmd.as_ref()),
        _ => None,
    })
}

fn constraint(cmd: &pb::AlterTableCmd) -> Option<&pb::Constraint> {
    match cmd.def.as_ref()?.node.as_ref()? {
        NodeEnum::Constraint(c) => Some(c),
        _ => None,
    }
}

impl Family {
    /// The family of `root` with nothing known yet but the table itself.
    pub fn new(root: Name, outside_keys: bool) -> Self {
        Self {
            relations: [root.clone()].into(),
            root,
            indexes: BTreeSet::new(),
            statistics: BTreeSet::new(),
            outside_keys,
            keys_left_out: BTreeSet::new(),
        }
    }

    /// Grows the family from the schema part of the dump (`parsed`, in dump order) until nothing
    /// more joins it: partitions and sequences may be defined before what they belong to.
    pub fn grow(&mut self, parsed: &[&pg_query::ParseResult]) {
        loop {
            let before = self.relations.len();
            for stmt in parsed.iter().flat_map(|p| statements(p)) {
                let joins = self.joins(stmt);
                self.relations.extend(joins);
            }
            if self.relations.len() == before {
                return;
            }
        }
    }

    /// Relations that `stmt` says belong to the family.
    fn joins(&self, stmt: &NodeEnum) -> Vec<Name> {
        let member = |n: Option<Name>| n.is_some_and(|n| self.relations.contains(&n));
        match stmt {
            NodeEnum::CreateStmt(c) if c.partbound.is_some() => {
                let parent = c.inh_relations.iter().any(|p| match &p.node {
                    Some(NodeEnum::RangeVar(rv)) => member(name(Some(rv))),
                    _ => false,
                });
                if parent {
                    name(c.relation.as_ref()).into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            NodeEnum::AlterTableStmt(a) if member(name(a.relation.as_ref())) => commands(a)
                .filter_map(|cmd| match cmd.subtype {
                    s if s == AlterTableType::AtAttachPartition as i32 => match cmd.def.as_ref()?.node.as_ref()? {
                        NodeEnum::PartitionCmd(p) => name(p.name.as_ref()),
                        _ => None,
                    },
                    s if s == AlterTableType::AtAddIdentity as i32 => constraint(cmd)?.options.iter().find_map(|o| match &o.node {
                        Some(NodeEnum::DefElem(d)) if d.defname == "sequence_name" => pair(&strings(d.arg.as_deref())),
                        _ => None,
                    }),
                    _ => None,
                })
                .collect(),
            NodeEnum::AlterSeqStmt(s) => {
                let owner = s.options.iter().find_map(|o| match &o.node {
                    Some(NodeEnum::DefElem(d)) if d.defname == "owned_by" => pair(&strings(d.arg.as_deref())),
                    _ => None,
                });
                if member(owner) {
                    name(s.sequence.as_ref()).into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// Whether a relation is in the family.
    pub fn has(&self, n: &Name) -> bool {
        self.relations.contains(n)
    }

    /// Decides one statement (`sql`, parsed as `parsed`), pointing what it keeps at `stage`.
    /// Indexes it creates on the family join the family's indexes.
    pub fn choose(&mut self, sql: &str, parsed: &pg_query::ParseResult, stage: &str) -> Choice {
        // pg_dump writes one statement per piece; a piece of several is kept only when every one
        // of them is about the family (a setting must not carry another table's DDL along).
        let mut all = true;
        let mut any = false;
        for stmt in statements(parsed) {
            match self.about(stmt) {
                Choice::Skip => all = false,
                Choice::Keep(_) => any = true,
                other => return other,
            }
        }
        if !(any && all) {
            return Choice::Skip;
        }
        if super::names::unusual_strings(sql) {
            return Choice::Refuse(UNUSUAL.into());
        }
        if statements(parsed).any(about_statistics) {
            // A statistics object's name is moved only where it names one: it may be the name of
            // a table outside the family too (statistics have names of their own).
            let moved: BTreeSet<Name> = self.relations.union(&self.statistics).cloned().collect();
            return Choice::Keep(restage(sql, &moved, stage));
        }
        Choice::Keep(self.restaged(sql, stage))
    }

    /// `sql` with the family's relations and indexes pointed at schema `stage`.
    pub fn restaged(&self, sql: &str, stage: &str) -> String {
        let moved: BTreeSet<Name> = self.relations.union(&self.indexes).cloned().collect();
        restage(sql, &moved, stage)
    }

    /// Whether `parts` (`schema`, `name`) name one of the family's statistics objects.
    fn statistic(&self, parts: &[String]) -> bool {
        parts.len() == 2 && pair(parts).is_some_and(|n| self.statistics.contains(&n))
    }

    /// Whether `stmt` is about the family (`Keep` with no text), and notes the indexes it makes.
    fn about(&mut self, stmt: &NodeEnum) -> Choice {
        let keep = |yes: bool| if yes { Choice::Keep(String::new()) } else { Choice::Skip };
        let has = |f: &Self, rv: Option<&pb::RangeVar>| name(rv).is_some_and(|n| f.relations.contains(&n));
        match stmt {
            // pgvigil's own lock_timeout stands: a table restore runs in a live database, where
            // waiting on a lock without end would hold up every query queued behind it.
            NodeEnum::VariableSetStmt(v) if v.name.eq_ignore_ascii_case("lock_timeout") => Choice::Skip,
            // Session settings: the statements after them were written for them.
            NodeEnum::VariableSetStmt(_) => Choice::Keep(String::new()),
            NodeEnum::CreateStmt(c) => keep(has(self, c.relation.as_ref())),
            NodeEnum::CreateSeqStmt(s) => keep(has(self, s.sequence.as_ref())),
            NodeEnum::AlterSeqStmt(s) => keep(has(self, s.sequence.as_ref())),
            NodeEnum::AlterTableStmt(a) if a.objtype == ObjectType::ObjectIndex as i32 => {
                keep(name(a.relation.as_ref()).is_some_and(|n| self.indexes.contains(&n)))
            }
            NodeEnum::AlterTableStmt(a) => {
                let Some(table) = name(a.relation.as_ref()).filter(|n| self.relations.contains(n)) else {
                    return Choice::Skip;
                };
                self.alter_table(a, &table)
            }
            NodeEnum::IndexStmt(i) => {
                let Some(table) = name(i.relation.as_ref()).filter(|n| self.relations.contains(n)) else {
                    return Choice::Skip;
                };
                self.indexes.insert(Name::new(&table.schema, &i.idxname));
                Choice::Keep(String::new())
            }
            // Extended statistics on exactly one family table, named with their schema (as
            // pg_dump writes them), and what is said of them later.
            NodeEnum::CreateStatsStmt(st) => {
                let on_family =
                    matches!(st.relations.as_slice(), [r] if matches!(&r.node, Some(NodeEnum::RangeVar(rv)) if has(self, Some(rv))));
                match node_strings(&st.defnames).as_slice() {
                    [schema, n] if on_family => {
                        self.statistics.insert(Name::new(schema, n));
                        Choice::Keep(String::new())
                    }
                    _ if on_family => Choice::LeftOut("a statistics object whose name has no schema".into()),
                    _ => Choice::Skip,
                }
            }
            NodeEnum::AlterStatsStmt(a) => keep(self.statistic(&node_strings(&a.defnames))),
            NodeEnum::AlterOwnerStmt(o) if o.object_type == ObjectType::ObjectStatisticExt as i32 => {
                keep(self.statistic(&strings(o.object.as_deref())))
            }
            NodeEnum::CommentStmt(c) if c.objtype == ObjectType::ObjectStatisticExt as i32 => {
                keep(self.statistic(&strings(c.object.as_deref())))
            }
            // Security labels of the table, its columns and sequences (the target needs the
            // label provider, as a full restore does).
            NodeEnum::SecLabelStmt(l) => keep(
                [ObjectType::ObjectTable, ObjectType::ObjectColumn, ObjectType::ObjectSequence]
                    .iter()
                    .any(|k| l.objtype == *k as i32)
                    && pair(&strings(l.object.as_deref())).is_some_and(|n| self.relations.contains(&n)),
            ),
            NodeEnum::CreateTrigStmt(t) => keep(has(self, t.relation.as_ref())),
            NodeEnum::CreatePolicyStmt(p) => keep(has(self, p.table.as_ref())),
            NodeEnum::RuleStmt(r) => keep(has(self, r.relation.as_ref())),
            NodeEnum::CommentStmt(c) => {
                let about = pair(&strings(c.object.as_deref()));
                let kind = |k: ObjectType| c.objtype == k as i32;
                let on_relation = [
                    ObjectType::ObjectTable,
                    ObjectType::ObjectColumn,
                    ObjectType::ObjectSequence,
                    ObjectType::ObjectTabconstraint,
                    ObjectType::ObjectTrigger,
                    ObjectType::ObjectPolicy,
                    ObjectType::ObjectRule,
                ]
                .into_iter()
                .any(kind);
                keep(about.is_some_and(|n| {
                    (kind(ObjectType::ObjectIndex) && self.indexes.contains(&n)) || (on_relation && self.relations.contains(&n))
                }))
            }
            NodeEnum::GrantStmt(g) => keep(
                !g.objects.is_empty()
                    && g.objects.iter().all(|o| match &o.node {
                        Some(NodeEnum::RangeVar(rv)) => has(self, Some(rv)),
                        _ => false,
                    }),
            ),
            // `SELECT`s are decided by [`wanted_select`].
            _ => Choice::Skip,
        }
    }

    /// An `ALTER TABLE` of a family member: kept, except a foreign key to a table outside the
    /// family when those are left out. Keys and unique constraints name their index.
    fn alter_table(&mut self, a: &pb::AlterTableStmt, table: &Name) -> Choice {
        for cmd in commands(a) {
            let Some(c) = constraint(cmd).filter(|_| cmd.subtype == AlterTableType::AtAddConstraint as i32) else {
                continue;
            };
            let kind = c.contype;
            if kind == ConstrType::ConstrForeign as i32 {
                let to = name(c.pktable.as_ref());
                if !self.outside_keys && !to.as_ref().is_some_and(|t| self.relations.contains(t)) {
                    self.keys_left_out.insert((table.clone(), c.conname.clone()));
                    let to = to.map_or_else(|| "another table".to_string(), |t| t.sql());
                    return Choice::LeftOut(format!("foreign key {} of {table} to {to}", super::names::ident(&c.conname)));
                }
            } else if kind == ConstrType::ConstrPrimary as i32
                || kind == ConstrType::ConstrUnique as i32
                || kind == ConstrType::ConstrExclusion as i32
            {
                let index = if c.indexname.is_empty() { &c.conname } else { &c.indexname };
                self.indexes.insert(Name::new(&table.schema, index));
            }
        }
        Choice::Keep(String::new())
    }
}

/// Whether `stmt` creates, alters or comments on an extended statistics object.
fn about_statistics(stmt: &NodeEnum) -> bool {
    let stat = ObjectType::ObjectStatisticExt as i32;
    match stmt {
        NodeEnum::CreateStatsStmt(_) | NodeEnum::AlterStatsStmt(_) => true,
        NodeEnum::AlterOwnerStmt(o) => o.object_type == stat,
        NodeEnum::CommentStmt(c) => c.objtype == stat,
        _ => false,
    }
}

/// The kinds of the table of contents that name their table (`table name`).
const ON_A_TABLE: [&str; 4] = ["CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "POLICY"];

impl Family {
    /// What the backup's table of contents lists on the family's tables (constraints, foreign
    /// keys, triggers, policies), but the keys left out on purpose: each named in `stage`, where
    /// the restore builds them, for [`crate::pipeline::restore::toc::guard_sql`].
    pub fn expected(&self, toc: &[TocEntry], stage: &str) -> Vec<TocEntry> {
        toc.iter()
            .filter(|e| ON_A_TABLE.contains(&e.kind.as_str()))
            .filter_map(|e| {
                // The longest family table whose name and a space begin the entry's name.
                let (table, object) = self
                    .relations
                    .iter()
                    .filter(|t| t.schema == e.schema)
                    .filter_map(|t| Some((t, e.name.strip_prefix(t.name.as_str())?.strip_prefix(' ')?)))
                    .max_by_key(|(t, _)| t.name.len())?;
                // A table outside the family whose name could begin it too: it may be that
                // table's (names with spaces); not expected.
                let ambiguous = toc.iter().any(|t| {
                    t.kind == "TABLE"
                        && t.schema == e.schema
                        && e.name.strip_prefix(t.name.as_str()).is_some_and(|rest| rest.starts_with(' '))
                        && !self.relations.contains(&Name::new(&t.schema, &t.name))
                });
                let left_out = e.kind == "FK CONSTRAINT" && self.keys_left_out.contains(&(table.clone(), object.to_string()));
                (!left_out && !ambiguous).then(|| TocEntry {
                    kind: e.kind.clone(),
                    schema: stage.to_string(),
                    name: e.name.clone(),
                })
            })
            .collect()
    }
}

/// Whether a `SELECT` is one a table's restore needs: `SELECT pg_catalog.set_config(…)` (the
/// session; the gate judges its arguments) or `SELECT pg_catalog.setval('<family sequence>',
/// <constant>[, <constant>])` naming nothing outside the family.
pub fn wanted_select(sql: &str, parsed: &pg_query::ParseResult, family: &Family) -> bool {
    // Exactly one statement, a SELECT of exactly one function call and nothing else.
    let stmts: Vec<&NodeEnum> = statements(parsed).collect();
    let [NodeEnum::SelectStmt(sel)] = stmts.as_slice() else {
        return false;
    };
    if !sel.from_clause.is_empty() || sel.where_clause.is_some() || sel.target_list.len() != 1 {
        return false;
    }
    let call = match sel.target_list[0].node.as_ref() {
        Some(NodeEnum::ResTarget(rt)) => match rt.val.as_deref().and_then(|v| v.node.as_ref()) {
            Some(NodeEnum::FuncCall(f)) => f.as_ref(),
            _ => return false,
        },
        _ => return false,
    };
    let function = node_strings(&call.funcname);
    match function.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["pg_catalog", "set_config"] => true,
        ["pg_catalog", "setval"] if (2..=3).contains(&call.args.len()) => {
            // The sequence is a plain string naming a family sequence; the rest are numbers or
            // booleans; and nothing else of the statement names a relation outside the family.
            let constant = |a: &pb::Node| match &a.node {
                Some(NodeEnum::AConst(c)) => c.val.clone(),
                _ => None,
            };
            // Written as pg_dump writes it: `'schema.name'` (not dollar-quoted or escaped).
            let plain = match &call.args[0].node {
                Some(NodeEnum::AConst(c)) => usize::try_from(c.location).is_ok_and(|at| sql.as_bytes().get(at) == Some(&b'\'')),
                _ => false,
            };
            let first = match constant(&call.args[0]) {
                Some(pb::a_const::Val::Sval(s)) if plain => Name::parse(&s.sval),
                _ => None,
            };
            let rest = call.args[1..].iter().all(|a| {
                matches!(
                    constant(a),
                    Some(pb::a_const::Val::Ival(_) | pb::a_const::Val::Fval(_) | pb::a_const::Val::Boolval(_))
                )
            });
            let others = super::names::named(sql)
                .into_iter()
                .filter(|n| *n != Name::new("pg_catalog", "setval"))
                .all(|n| family.has(&n));
            first.is_some_and(|n| family.has(&n)) && rest && others
        }
        _ => false,
    }
}
