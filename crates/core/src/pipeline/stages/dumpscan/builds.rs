//! The statements of what follows a dump's data that a restore may run in a session of their own,
//! beside others of their kind: each builds an index on one table — `CREATE INDEX` (not
//! `CONCURRENTLY`), or `ALTER TABLE ONLY … ADD CONSTRAINT` of a primary key, a unique or an
//! exclusion constraint — and needs nothing that follows it in the dump. The gate notes where each
//! lies in what it passed ([`Build`]); everything else keeps the dump's order.
//!
//! A noted build runs before everything that is not one, so it must not depend on anything that
//! precedes it: builds are noted only until a statement passes that a build might depend on
//! ([`Order`]). pg_dump writes the keys and indexes first, with nothing between them but sequence
//! values, large objects, settings and comments on what was just built.

use pg_query::protobuf as pb;
use pg_query::NodeEnum;
use std::collections::{BTreeMap, BTreeSet};

/// One index build among what the gate passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Where the statement (with the comments before it) lies in what the gate passed: byte
    /// offsets, `start..end`.
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// The table the index is built on: schema (empty when the statement names none) and name.
    pub table: (String, String),
    /// The `default_tablespace` the dump had set before it (`None`: the session's own).
    pub tablespace: Option<String>,
    /// A `CREATE INDEX` without `ONLY`: on a partitioned table it builds on every partition too
    /// (pg_dump writes `ON ONLY` there), so it may run apart only on a table that holds data.
    pub recurses: bool,
}

/// Whether builds may still be noted: nothing passed so far that a build might depend on.
#[derive(Debug, Default)]
pub(super) struct Order {
    /// A statement passed that a later build might depend on.
    closed: bool,
    /// What the noted builds made: `schema.index`, and `schema.table.constraint`.
    built: BTreeSet<Vec<String>>,
}

/// Most names [`Order`] keeps (the gate notes at most `MAX_BUILDS` builds anyway).
const MAX_BUILT: usize = 200_000;

impl Order {
    /// Builds may still be noted.
    pub fn open(&self) -> bool {
        !self.closed
    }

    /// `stmt` passed the gate; `noted`: as a build that runs apart.
    pub fn passed(&mut self, stmt: &NodeEnum, noted: bool) {
        if noted {
            if self.built.len() < MAX_BUILT {
                self.built.extend(made(stmt));
            }
        } else if !self.harmless(stmt) {
            self.closed = true;
        }
    }

    /// What a build cannot depend on: another build (builds are independent of each other),
    /// settings, sequence values and large objects (`SELECT` of the functions the gate allows,
    /// pg_dump's `BEGIN`/`COMMIT` around them), a comment or label on what a noted build made.
    fn harmless(&self, stmt: &NodeEnum) -> bool {
        let on_built = |objtype: i32, object: Option<&pb::Node>| {
            let kinds = [pb::ObjectType::ObjectIndex, pb::ObjectType::ObjectTabconstraint];
            kinds.iter().any(|k| *k as i32 == objtype) && self.built.contains(&super::nodes::list_strings(object))
        };
        match stmt {
            NodeEnum::VariableSetStmt(_) | NodeEnum::SelectStmt(_) | NodeEnum::TransactionStmt(_) => true,
            NodeEnum::CommentStmt(c) => on_built(c.objtype, c.object.as_deref()),
            NodeEnum::SecLabelStmt(l) => on_built(l.objtype, l.object.as_deref()),
            other => table_built(other).is_some(),
        }
    }
}

/// The names a build makes, as a comment would name them.
fn made(stmt: &NodeEnum) -> Vec<Vec<String>> {
    match stmt {
        NodeEnum::IndexStmt(i) => i
            .relation
            .as_ref()
            .map(|r| vec![vec![r.schemaname.clone(), i.idxname.clone()]])
            .unwrap_or_default(),
        NodeEnum::AlterTableStmt(a) => {
            let Some(r) = a.relation.as_ref() else { return Vec::new() };
            a.cmds
                .iter()
                .filter_map(|c| match c.node.as_ref()? {
                    NodeEnum::AlterTableCmd(cmd) => match cmd.def.as_ref()?.node.as_ref()? {
                        NodeEnum::Constraint(k) => Some(vec![r.schemaname.clone(), r.relname.clone(), k.conname.clone()]),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Whether `stmt` is a `CREATE INDEX` without `ONLY`.
pub(super) fn recurses(stmt: &NodeEnum) -> bool {
    matches!(stmt, NodeEnum::IndexStmt(i) if i.relation.as_ref().is_some_and(|r| r.inh))
}

/// The table `stmt` builds an index on, when it is a build a session of its own may run.
pub(super) fn table_built(stmt: &NodeEnum) -> Option<(String, String)> {
    let relation = match stmt {
        NodeEnum::IndexStmt(i) if !i.concurrent => i.relation.as_ref()?,
        NodeEnum::AlterTableStmt(a) if a.objtype == pb::ObjectType::ObjectTable as i32 && is_key_constraint(&a.cmds) => {
            // Without ONLY a constraint reaches the partitions too, which other sessions build on.
            a.relation.as_ref().filter(|r| !r.inh)?
        }
        _ => return None,
    };
    (relation.relpersistence != "t").then(|| (relation.schemaname.clone(), relation.relname.clone()))
}

/// Whether `cmds` is exactly one `ADD CONSTRAINT` of a primary key, unique or exclusion
/// constraint (a foreign key needs the key it references; a check may need nothing, but is cheap).
fn is_key_constraint(cmds: &[pb::Node]) -> bool {
    let [cmd] = cmds else { return false };
    let Some(NodeEnum::AlterTableCmd(c)) = cmd.node.as_ref() else {
        return false;
    };
    if c.subtype != pb::AlterTableType::AtAddConstraint as i32 {
        return false;
    }
    let Some(NodeEnum::Constraint(k)) = c.def.as_ref().and_then(|d| d.node.as_ref()) else {
        return false;
    };
    [
        pb::ConstrType::ConstrPrimary,
        pb::ConstrType::ConstrUnique,
        pb::ConstrType::ConstrExclusion,
    ]
    .iter()
    .any(|t| k.contype == *t as i32)
}

/// The tablespace a build runs with, given the settings the dump changed before it: `Some(None)`
/// for the session's own, `Some(Some(name))` for one the dump set, `None` when the build must keep
/// the dump's order (another setting changed, or a name pgvigil would not write into a `SET`).
pub(super) fn tablespace_for(settings: &BTreeMap<String, String>) -> Option<Option<String>> {
    let mut tablespace = None;
    for (name, value) in settings {
        match name.as_str() {
            "default_tablespace" => tablespace = Some(value),
            // Indexes name their access method; the table's does not matter to them.
            "default_table_access_method" => {}
            _ => return None,
        }
    }
    match tablespace.map(String::as_str) {
        None | Some("") => Some(None),
        // How the gate records `RESET` and `DEFAULT`, and a tablespace named so: keep the order.
        Some("RESET") => None,
        Some(v) if v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_$ -".contains(&b)) => Some(Some(v.to_string())),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> NodeEnum {
        let p = pg_query::parse(sql, 0).unwrap().protobuf;
        p.stmts[0].stmt.as_ref().unwrap().node.clone().unwrap()
    }

    #[test]
    fn only_index_builds_on_one_table_run_apart() {
        let t = |s: &str, n: &str| Some((s.to_string(), n.to_string()));
        let cases = [
            ("CREATE INDEX i ON public.t USING btree (a);", t("public", "t")),
            ("CREATE UNIQUE INDEX i ON ONLY public.p USING btree (a);", t("public", "p")),
            ("CREATE INDEX i ON t (a);", t("", "t")),
            ("CREATE INDEX CONCURRENTLY i ON public.t (a);", None),
            (
                "ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);",
                t("public", "t"),
            ),
            ("ALTER TABLE ONLY \"S\".\"T\" ADD CONSTRAINT u UNIQUE (a, b);", t("S", "T")),
            (
                "ALTER TABLE ONLY public.t ADD CONSTRAINT x EXCLUDE USING gist (r WITH &&);",
                t("public", "t"),
            ),
            // Reaches the partitions: keeps the dump's order.
            ("ALTER TABLE public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);", None),
            (
                "ALTER TABLE ONLY public.t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.u(id);",
                None,
            ),
            ("ALTER TABLE ONLY public.t ADD CONSTRAINT c CHECK (a > 0);", None),
            (
                "ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id), ADD CONSTRAINT u UNIQUE (a);",
                None,
            ),
            ("ALTER INDEX public.p_pkey ATTACH PARTITION public.c_pkey;", None),
            (
                "CREATE TRIGGER tr AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION f();",
                None,
            ),
            ("ALTER TABLE ONLY public.t CLUSTER ON i;", None),
            ("SELECT pg_catalog.setval('public.s', 1, true);", None),
        ];
        for (sql, want) in cases {
            assert_eq!(table_built(&parsed(sql)), want, "{sql}");
        }
    }

    /// The builds the gate notes in `after` (the part that follows the data): statement, and
    /// whether it recurses.
    fn noted(after: &str) -> Vec<(String, bool)> {
        let mut scanner = super::super::DumpScanner::gated(super::super::GateRules::default()).noting_builds();
        let mut passed = Vec::new();
        scanner.feed_filtered(after.as_bytes(), &mut passed);
        let text = |b: &Build| String::from_utf8(passed[b.start as usize..b.end as usize].to_vec()).unwrap();
        scanner
            .take_builds()
            .iter()
            .map(|b| (text(b).trim().to_string(), b.recurses))
            .collect()
    }

    #[test]
    fn builds_are_noted_only_until_something_they_might_depend_on_passes() {
        let after = "ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\
            COMMENT ON CONSTRAINT t_pkey ON public.t IS 'key';\n\
            SELECT pg_catalog.setval('public.s', 3, true);\n\
            SET default_tablespace = '';\n\
            CREATE INDEX i ON public.u USING btree (a);\n\
            COMMENT ON INDEX public.i IS 'built';\n\
            CREATE INDEX p ON ONLY public.p USING btree (a);\n\
            COMMENT ON INDEX public.j IS 'not built yet';\n\
            CREATE INDEX j ON public.u USING btree (b);\n";
        let want = [
            ("ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);", false),
            ("CREATE INDEX i ON public.u USING btree (a);", true),
            ("CREATE INDEX p ON ONLY public.p USING btree (a);", false),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(s, r)| (s.to_string(), *r)).collect();
        assert_eq!(noted(after), want);
        // A build after a change to its table keeps the dump's order.
        let after = "CREATE INDEX a ON public.t (x);\nALTER TABLE public.t DROP COLUMN y;\nCREATE INDEX b ON public.t (y);\n";
        assert_eq!(noted(after), [("CREATE INDEX a ON public.t (x);".to_string(), true)]);
    }

    #[test]
    fn a_build_runs_apart_only_with_the_settings_it_needs() {
        let s = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let cases = [
            (s(&[]), Some(None)),
            (s(&[("default_tablespace", "")]), Some(None)),
            (s(&[("default_tablespace", "fast_disk")]), Some(Some("fast_disk".to_string()))),
            (
                s(&[("default_tablespace", ""), ("default_table_access_method", "heap")]),
                Some(None),
            ),
            (s(&[("default_tablespace", "café")]), None),
            (s(&[("default_tablespace", "RESET")]), None),
            (s(&[("default_tablespace", "it's")]), None),
            (s(&[("default_tablespace", "a\\b")]), None),
            (s(&[("search_path", "public")]), None),
            (s(&[("maintenance_work_mem", "1GB")]), None),
        ];
        for (settings, want) in cases {
            assert_eq!(tablespace_for(&settings), want, "{settings:?}");
        }
    }

    #[test]
    fn the_gate_notes_where_each_build_lies_in_what_it_passed() {
        let after = "\n--\n-- Name: s; Type: SEQUENCE SET\n--\n\nSELECT pg_catalog.setval('public.s', 3, true);\n\n\
            SET default_tablespace = '';\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT\n--\n\n\
            ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\
            SET default_tablespace = fast;\n\nCREATE INDEX u_a ON public.u USING btree (a);\n\n\
            ALTER TABLE ONLY public.u\n    ADD CONSTRAINT u_t FOREIGN KEY (t) REFERENCES public.t(id);\n\n\
            BEGIN;\nCREATE INDEX inside ON public.t (id);\nCOMMIT;\n";
        for chunk in [1, 7, 64, after.len()] {
            let mut scanner = super::super::DumpScanner::gated(super::super::GateRules::default()).noting_builds();
            let mut passed = Vec::new();
            for piece in after.as_bytes().chunks(chunk) {
                scanner.feed_filtered(piece, &mut passed);
            }
            let builds = scanner.take_builds();
            let text = |b: &Build| String::from_utf8(passed[b.start as usize..b.end as usize].to_vec()).unwrap();
            let got: Vec<(String, String, Option<String>)> =
                builds.iter().map(|b| (text(b), b.table.1.clone(), b.tablespace.clone())).collect();
            assert_eq!(
                got,
                [
                    (
                        "\n--\n-- Name: t t_pkey; Type: CONSTRAINT\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n"
                            .to_string(),
                        "t".to_string(),
                        None
                    ),
                    ("\nCREATE INDEX u_a ON public.u USING btree (a);\n".to_string(), "u".to_string(), Some("fast".to_string())),
                ],
                "chunks of {chunk}"
            );
        }
    }
}
