//! The statements of what follows a dump's data that a restore may run in a session of their own,
//! beside others of their kind: each builds an index on one table — `CREATE INDEX` (not
//! `CONCURRENTLY`), or `ALTER TABLE ONLY … ADD CONSTRAINT` of a primary key, a unique or an
//! exclusion constraint — and needs nothing that follows it in the dump. The gate notes where each
//! lies in what it passed ([`Build`]); everything else keeps the dump's order.

use pg_query::protobuf as pb;
use pg_query::NodeEnum;
use std::collections::BTreeMap;

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
