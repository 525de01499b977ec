//! The dump scanner against dumps cut, chunked and filtered every way.

use super::*;

const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\nSET x = 1;\n\nCOPY public.items (id, name) FROM stdin;\n1\ta\n2\tb\\nwith newline\n3\t\\.\n\\.\n\nCOPY \"My Schema\".\"Odd Table\" (id) FROM stdin;\n\\.\n\nCOPY public.t2 (a) FROM stdin;\n7\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n";

fn scan_in_chunks(data: &[u8], chunk: usize) -> ScanResult {
    let mut s = DumpScanner::new();
    for c in data.chunks(chunk) {
        s.feed(c);
    }
    s.finish()
}

#[test]
fn counts_rows_whatever_the_chunking() {
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let r = scan_in_chunks(DUMP.as_bytes(), chunk);
        assert_eq!(r.tables.get("public.items"), Some(&3), "chunk {chunk}");
        assert_eq!(r.tables.get("\"My Schema\".\"Odd Table\""), Some(&0));
        assert_eq!(r.tables.get("public.t2"), Some(&1));
        assert!(r.complete);
        assert_eq!(r.dumped_by.as_deref(), Some("15.18"));
        assert_eq!(r.bytes, DUMP.len() as u64);
    }
}

#[test]
fn every_copy_block_is_located_exactly_whatever_the_chunking() {
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let mut s = DumpScanner::new();
        let mut cuts = Vec::new();
        for c in DUMP.as_bytes().chunks(chunk) {
            s.feed(c);
            cuts.extend(s.take_cuts());
        }
        let r = s.finish();
        let spans: Vec<(&str, &str, u64)> = r
            .copies
            .iter()
            .map(|c| (c.table.as_str(), &DUMP[c.begin as usize..c.end as usize], c.rows))
            .collect();
        assert_eq!(
            spans,
            [
                (
                    "public.items",
                    "COPY public.items (id, name) FROM stdin;\n1\ta\n2\tb\\nwith newline\n3\t\\.\n\\.\n",
                    3
                ),
                (
                    "\"My Schema\".\"Odd Table\"",
                    "COPY \"My Schema\".\"Odd Table\" (id) FROM stdin;\n\\.\n",
                    0
                ),
                ("public.t2", "COPY public.t2 (a) FROM stdin;\n7\n\\.\n", 1),
            ],
            "chunk {chunk}"
        );
        let from_spans: Vec<u64> = r.copies.iter().flat_map(|c| [c.begin, c.end]).collect();
        assert_eq!(cuts, from_spans, "chunk {chunk}");
    }
    // A block cut inside the data is not a span.
    let r = scan_in_chunks(&DUMP.as_bytes()[..DUMP.find("2\tb").unwrap()], 5);
    assert!(r.copies.is_empty());
}

#[test]
fn detects_truncation() {
    let cases = [
        (DUMP.find("2\tb").unwrap(), false, Some("public.items")),
        (DUMP.find("-- PostgreSQL database dump complete").unwrap(), false, None),
        (DUMP.len(), true, None),
    ];
    for (cut, complete, open) in cases {
        let r = scan_in_chunks(&DUMP.as_bytes()[..cut], 5);
        assert_eq!(r.complete, complete, "cut at {cut}");
        assert_eq!(r.open_copy.as_deref(), open);
    }
}

#[test]
fn unrestrict_after_the_closing_line_is_still_complete() {
    let d = format!("{DUMP}\\unrestrict abc\n\n");
    assert!(scan_in_chunks(d.as_bytes(), 3).complete);
    let d = format!("{DUMP}SELECT 1;\n");
    assert!(!scan_in_chunks(d.as_bytes(), 3).complete);
}

/// A dump as pg_dump 15 writes it: `\restrict`, settings, a procedure whose body says COMMIT, a
/// COPY row that reads COMMIT;, large objects inside BEGIN; … COMMIT;, `\unrestrict`.
const RESTORABLE: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict Q7xYz0\n\n-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n\nCREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;\n\n--\n-- Name: p(); Type: PROCEDURE; Schema: public; Owner: app\n--\n\nCREATE PROCEDURE public.p()\n    LANGUAGE plpgsql\n    AS $$\nBEGIN\nCOMMIT;\nEND $$;\n\nCREATE TABLE public.t (\n    a text\n);\n\nCOPY public.t (a) FROM stdin;\nCOMMIT;\n\\.\n\n\nBEGIN;\n\nSELECT pg_catalog.lo_open('16390', 131072);\nSELECT pg_catalog.lowrite(0, '\\x68656c6c6f');\nSELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict Q7xYz0\n\n";

/// Feeds `dump` through a gated scanner in chunks of `chunk` bytes.
fn gated(dump: &str, rules: GateRules, chunk: usize) -> (String, ScanResult) {
    let mut s = DumpScanner::gated(rules);
    let mut out = Vec::new();
    for c in dump.as_bytes().chunks(chunk) {
        s.feed_filtered(c, &mut out);
    }
    (String::from_utf8(out).unwrap(), s.finish())
}

#[test]
fn the_gate_passes_what_pg_dump_writes_without_its_own_transaction_and_restrict_lines() {
    // What psql gets: every statement; not pg_dump's \restrict lines (pgvigil restricts psql
    // itself), not its BEGIN;/COMMIT; around large objects (with the blank lines before them);
    // not the comments after the last statement.
    let want = "--\n-- PostgreSQL database dump\n--\n\n\n-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n\nCREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;\n\n--\n-- Name: p(); Type: PROCEDURE; Schema: public; Owner: app\n--\n\nCREATE PROCEDURE public.p()\n    LANGUAGE plpgsql\n    AS $$\nBEGIN\nCOMMIT;\nEND $$;\n\nCREATE TABLE public.t (\n    a text\n);\n\nCOPY public.t (a) FROM stdin;\nCOMMIT;\n\\.\n\nSELECT pg_catalog.lo_open('16390', 131072);\nSELECT pg_catalog.lowrite(0, '\\x68656c6c6f');\nSELECT pg_catalog.lo_close(0);\n";
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let (out, r) = gated(RESTORABLE, GateRules::default(), chunk);
        assert_eq!(out, want, "chunk {chunk}");
        assert_eq!(r.forbidden, None);
        assert_eq!(r.transaction_lines, 2, "chunk {chunk}");
        assert_eq!(r.tables.get("public.t"), Some(&1), "a COPY row that reads COMMIT; is data");
        assert_eq!(r.extensions, vec!["hstore".to_string()]);
        assert!(r.complete);
    }
}

#[test]
fn a_cut_statement_is_never_passed_on() {
    for cut in [
        "SET row_security = off;\nCOMMIT",
        "SET row_security = off;\nCOMMIT;",
        "SET row_security = off;\nCREATE TABLE public.t (a int",
        "SET row_security = off;\n  commit",
        "SET row_security = off;\nSELECT pg_catalog.setval('s', 1)",
    ] {
        for chunk in [1, 3, 4096] {
            let (out, r) = gated(cut, GateRules::default(), chunk);
            assert_eq!(out, "SET row_security = off;\n", "{cut:?}");
            assert!(!r.complete);
        }
    }
}

/// Hostile dumps: each is refused with the reason named, and nothing from the refused statement
/// on reaches psql, however the stream is chunked.
#[test]
fn what_pg_dump_never_writes_stops_the_stream() {
    let head = "SET row_security = off;\n";
    let cases: &[(&str, &str)] = &[
        ("\\! touch /tmp/pwned\n", "psql command \\!"),
        ("SET x = 1; \\! id\n", "psql command"),
        ("COMMENT ON TABLE t IS 'x';\\! id\n", "psql command"),
        ("COMMENT ON TABLE t IS 'x' \\gexec\n", "psql command"),
        ("  \\! id\n", "psql command"),
        ("\\restrict abc\n\\restrict abc\n", "psql command \\restrict"),
        ("\\copy t to '/tmp/x'\n", "psql command \\copy"),
        ("COMMIT;\n", "transaction control"),
        ("SELECT 1; COMMIT;\n", "query"),
        ("END;\n", "transaction control"),
        ("  commit ; \n", "transaction control"),
        ("/* x */ ROLLBACK;\n", "ROLLBACK"),
        ("CREATE TABLE a (x int); COMMIT;\n", "transaction control"),
        ("BEGIN;\nBEGIN;\n", "transaction control"),
        ("PREPARE TRANSACTION 'x';\n", "PREPARE TRANSACTION"),
        ("ALTER SYSTEM SET archive_command = 'id';\n", "ALTER SYSTEM"),
        ("COPY public.t FROM PROGRAM 'id';\n", "program"),
        ("COPY public.t (a) FROM '/etc/passwd';\n", "file"),
        ("COPY public.t (a) FROM stdin;\nx\n\\.\r\nSELECT 1;\n", "carriage return"),
        ("COPY public.t (a) FROM stdin; SELECT 1;\nx\n\\.\n", "COPY"),
        ("copy public.t (a) from stdin;\nx\n\\.\n", "COPY"),
        ("COPY public.t (a) FROM 'x FROM stdin;\nx\n\\.\n", "COPY"),
        ("DO $$ BEGIN PERFORM 1; END $$;\n", "DO"),
        ("CALL public.p();\n", "CALL"),
        ("LOAD 'x';\n", "LOAD"),
        ("CREATE DATABASE x;\n", "CREATE DATABASE"),
        ("SET ROLE postgres;\n", "does not name"),
        ("SET standard_conforming_strings = off;\n", "standard_conforming_strings"),
        ("SET client_encoding = 'SJIS';\n", "client_encoding"),
        ("SELECT pg_sleep(1000);\n", "pg_sleep"),
        ("CREATE VIEW v AS SELECT :VERSION;\n", "psql variable"),
        ("SELECT 1\0;\n", "NUL"),
        ("CREATE TABLE x (a int\n\\.\n);\n", "psql command"),
        // psql reads a routine named begin together with what follows, COPY data included.
        (
            "CREATE FUNCTION public.begin() RETURNS integer LANGUAGE sql AS $$SELECT 1$$;\nCOPY public.t (a) FROM stdin;\nend; COMMIT; DROP TABLE x;\n\\.\n",
            "COPY",
        ),
        (
            "CREATE FUNCTION public.begin() RETURNS integer LANGUAGE sql AS $$SELECT 1$$;\nSET row_security = off; end; COMMIT;\n",
            "transaction control",
        ),
    ];
    for (hostile, why) in cases {
        let dump = format!("{head}{hostile}CREATE TABLE public.after (a int);\n");
        for chunk in [1, 2, 5, 4096] {
            let (out, r) = gated(&dump, GateRules::default(), chunk);
            let reason = r.forbidden.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(reason.contains(why), "chunk {chunk}: {hostile:?}: {reason:?}");
            // COPY data streams once its COPY passed: up to the line the gate refused.
            let allowed = match hostile.find("\\.\r") {
                Some(at) => format!("{head}{}", &hostile[..at]),
                None => head.to_string(),
            };
            assert!(allowed.starts_with(&out), "chunk {chunk}: {hostile:?} passed on {out:?}");
        }
    }
}

#[test]
fn sql_standard_bodies_pass_whole_as_psql_sends_them() {
    let dump = "CREATE FUNCTION public.g() RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT 1;\nEND;\n\nCREATE PROCEDURE public.p2()\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT CASE WHEN true THEN 1 ELSE 2 END;\n SELECT 2;\nEND;\n\nCREATE OR REPLACE FUNCTION public.h() RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT 3; END;\nSET row_security = off;\n";
    for chunk in [1, 2, 7, 4096] {
        let (out, r) = gated(dump, GateRules::default(), chunk);
        assert_eq!(r.forbidden, None, "chunk {chunk}");
        assert_eq!(out, dump, "chunk {chunk}");
    }
}

#[test]
fn a_complete_dump_with_a_statement_that_never_ends_is_refused() {
    for (dump, why) in [
        (
            "SET row_security = off; \\! id\n--\n-- PostgreSQL database dump complete\n--\n",
            "psql command",
        ),
        (
            "CREATE TABLE x (a int\n--\n-- PostgreSQL database dump complete\n--\n",
            "does not end",
        ),
    ] {
        for chunk in [1, 3, 4096] {
            let (out, r) = gated(dump, GateRules::default(), chunk);
            let reason = r.forbidden.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(reason.contains(why), "chunk {chunk}: {dump:?}: {reason:?}");
            assert_eq!(out, "", "nothing of it reached psql: {dump:?}");
        }
    }
}

#[test]
fn a_copy_header_longer_than_the_line_cap_is_still_a_copy() {
    let columns: Vec<String> = (0..9000).map(|i| format!("column_{i}")).collect();
    let header = format!("COPY public.wide ({}) FROM stdin;", columns.join(", "));
    assert!(header.len() > MAX_LINE);
    let dump = format!("{header}\nO'Brien\t1\n\\.\n\n--\n{CLOSING_LINE}\n--\n");
    for chunk in [7, 4096, 1 << 20] {
        let (out, r) = gated(&dump, GateRules::default(), chunk);
        assert_eq!(out, format!("{header}\nO'Brien\t1\n\\.\n"));
        assert_eq!(r.tables.get("public.wide"), Some(&1), "chunk {chunk}");
        assert!(r.complete, "chunk {chunk}");
    }
}

const PRIVILEGED: &str = "SET row_security = off;\nCREATE TABLE public.t (a integer);\nALTER TABLE public.t OWNER TO app;\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a);\nCOPY public.t (a) FROM stdin;\n1\nGRANT x\n\\.\nALTER SCHEMA s OWNER TO \"App Owner\";\nSET SESSION AUTHORIZATION grantor;\nGRANT SELECT ON TABLE public.t TO via_grantor;\nRESET SESSION AUTHORIZATION;\nGRANT SELECT ON TABLE public.t TO ro;\nGRANT SELECT(a) ON TABLE public.t TO colreader;\nREVOKE ALL ON SCHEMA public FROM PUBLIC;\nALTER DEFAULT PRIVILEGES FOR ROLE app GRANT SELECT ON TABLES TO ro;\nCREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$\nGRANT SELECT ON TABLE public.t TO inside_body;\n$$;\nCOMMENT ON TABLE public.t IS 'ALTERNATIVE';\n--\n-- PostgreSQL database dump complete\n--\n";

fn stripped(dump: &str, strip: Strip, chunk: usize) -> (String, ScanResult) {
    let roles = ["app", "App Owner", "grantor", "ro", "via_grantor", "colreader"].map(String::from);
    gated(
        dump,
        GateRules {
            strip,
            roles: KnownRoles(roles.into_iter().collect()),
        },
        chunk,
    )
}

#[test]
fn privilege_statements_are_left_out_only_as_asked() {
    let statements = &PRIVILEGED[..PRIVILEGED.find("--\n-- PostgreSQL").unwrap()];
    for chunk in [1, 3, 17, 4096] {
        let (all, r) = stripped(PRIVILEGED, Strip::Nothing, chunk);
        assert_eq!(all, statements, "chunk {chunk}");
        assert_eq!(r.privilege_lines_removed, 0);
        assert_eq!(r.owners.get("public.t").map(String::as_str), Some("app"));
        assert_eq!(
            r.grants.get("public.t").map(|g| g.iter().cloned().collect::<Vec<_>>()),
            Some(vec!["ro".to_string(), "via_grantor".to_string()])
        );

        let (out, r) = stripped(PRIVILEGED, Strip::Ownership, chunk);
        assert!(!out.contains("OWNER TO"), "chunk {chunk}: {out}");
        assert!(
            out.contains("GRANT SELECT ON TABLE public.t TO ro;\n") && out.contains("ADD CONSTRAINT"),
            "{out}"
        );
        assert!(!out.contains("SESSION AUTHORIZATION") && out.contains("TO via_grantor;\n"), "{out}");
        assert_eq!(r.privilege_lines_removed, 4);
        let roles: Vec<&str> = r.roles.iter().map(String::as_str).collect();
        assert_eq!(
            roles,
            ["\"App Owner\"", "app", "colreader", "grantor", "ro", "via_grantor"],
            "chunk {chunk}"
        );

        let (out, r) = stripped(PRIVILEGED, Strip::OwnershipAndGrants, chunk);
        for gone in [
            "OWNER TO",
            "TO ro;",
            "colreader",
            "REVOKE",
            "DEFAULT PRIVILEGES",
            "SESSION AUTHORIZATION",
            "via_grantor",
        ] {
            assert!(!out.contains(gone), "chunk {chunk}: {gone} in {out}");
        }
        // COPY data, function bodies and other ALTER statements are untouched.
        for kept in ["GRANT x\n", "inside_body", "ADD CONSTRAINT t_pkey", "'ALTERNATIVE';\n"] {
            assert!(out.contains(kept), "chunk {chunk}: {kept} missing from {out}");
        }
        assert_eq!(r.privilege_lines_removed, 9);
        assert!(r.forbidden.is_none());
    }
}

#[test]
fn the_table_of_contents_is_read_from_the_headers() {
    let dump = "--\n-- Name: t; Type: TABLE; Schema: public; Owner: app\n--\n\n--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n--\n--\n-- Name: f(integer, public.mood); Type: FUNCTION; Schema: public; Owner: -\n--\n--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: app\n--\n--\n-- Name: hstore; Type: EXTENSION; Schema: -; Owner: -\n--\n--\n-- Name: Größe \"q\"; Type: MATERIALIZED VIEW; Schema: Ünï Schema; Owner: app; Tablespace: fast\n--\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n-- Name: x; Type: TABLE; Schema: public; Owner: app\nSELECT 1 $$;\n";
    let r = scan_in_chunks(dump.as_bytes(), 3);
    let got: Vec<(&str, &str, &str)> = r
        .toc
        .iter()
        .map(|e| (e.kind.as_str(), e.schema.as_str(), e.name.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("TABLE", "public", "t"),
            ("CONSTRAINT", "public", "t t_pkey"),
            ("FUNCTION", "public", "f(integer, public.mood)"),
            ("MATERIALIZED VIEW", "Ünï Schema", "Größe \"q\""),
        ],
        "data entries, extensions and text inside bodies are not objects to check"
    );
}
