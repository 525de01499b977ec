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

#[test]
fn filtering_removes_only_the_dumps_own_transaction_lines() {
    let dump = "SET x = 1;\nCREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;\nCREATE PROCEDURE p() LANGUAGE plpgsql AS $$\nBEGIN\nCOMMIT;\nEND $$;\n\nCOPY public.t (a) FROM stdin;\nCOMMIT;\n\\.\n\nBEGIN;\n\nSELECT pg_catalog.lo_open('16390', 131072);\nSELECT pg_catalog.lowrite(0, '\\x68656c6c6f');\nCOMMIT;\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
    let want = dump
        .replacen("\nBEGIN;\n\nSELECT", "\n\nSELECT", 1)
        .replacen("'\\x68656c6c6f');\nCOMMIT;\n", "'\\x68656c6c6f');\n", 1);
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let mut s = DumpScanner::new();
        let mut out = Vec::new();
        for c in dump.as_bytes().chunks(chunk) {
            s.feed_filtered(c, &mut out);
        }
        let r = s.finish();
        assert_eq!(String::from_utf8(out).unwrap(), want, "chunk {chunk}");
        assert_eq!(r.transaction_lines, 2, "chunk {chunk}");
        assert_eq!(r.tables.get("public.t"), Some(&1), "a COPY row that reads COMMIT; is data");
        assert_eq!(r.extensions, vec!["hstore".to_string()]);
        assert!(r.complete);
    }
}

#[test]
fn a_cut_transaction_line_is_never_passed_on() {
    for cut in [
        "SELECT 1;\nCOMMIT",
        "SELECT 1;\nCOMMIT;",
        "SELECT 1;\nEND",
        "SELECT 1;\n  commit",
        "SELECT 1;\nEND TRANSACTION",
    ] {
        let mut s = DumpScanner::new();
        let mut out = Vec::new();
        s.feed_filtered(cut.as_bytes(), &mut out);
        assert_eq!(out, b"SELECT 1;\n", "{cut:?}");
        assert!(!s.finish().complete);
    }
}

fn filtered(dump: &str, chunk: usize) -> (String, ScanResult) {
    let mut s = DumpScanner::new();
    let mut out = Vec::new();
    for c in dump.as_bytes().chunks(chunk) {
        s.feed_filtered(c, &mut out);
    }
    (String::from_utf8(out).unwrap(), s.finish())
}

#[test]
fn what_would_break_the_transaction_is_held_back_and_reported() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("SELECT 1;\nCOMMIT;\nSELECT 2;\n", "SELECT 1;\nSELECT 2;\n", Some("COMMIT, which")),
        ("SELECT 1;\nROLLBACK;\n", "SELECT 1;\n", Some("ROLLBACK")),
        ("SELECT 1;\n  commit;\n", "SELECT 1;\n", Some("COMMIT")),
        ("SELECT 1;\nEND TRANSACTION;\n", "SELECT 1;\n", Some("END TRANSACTION")),
        ("SELECT 1;\nCOMMIT AND CHAIN;\n", "SELECT 1;\n", Some("COMMIT AND CHAIN")),
        ("SELECT 1;\nPREPARE TRANSACTION 'x';\n", "SELECT 1;\n", Some("PREPARE TRANSACTION")),
        ("PREPARE q AS SELECT 1;\n", "PREPARE q AS SELECT 1;\n", None),
        ("ENDPOINTS;\n", "ENDPOINTS;\n", None),
        ("\\connect other\nSELECT 1;\n", "SELECT 1;\n", Some("psql command \\connect")),
        (
            "\\restrict abc\nSELECT 1;\n\\unrestrict abc\n",
            "\\restrict abc\nSELECT 1;\n\\unrestrict abc\n",
            None,
        ),
        (
            "CREATE FUNCTION f() RETURNS int\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT 1;\nEND;\n",
            "CREATE FUNCTION f() RETURNS int\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT 1;\nEND;\n",
            None,
        ),
        (
            "CREATE VIEW v AS\n SELECT CASE\n  WHEN true THEN 1\n        END;\n",
            "CREATE VIEW v AS\n SELECT CASE\n  WHEN true THEN 1\n        END;\n",
            None,
        ),
        ("SELECT 'x\nCOMMIT;\n';\n", "SELECT 'x\nCOMMIT;\n';\n", None),
    ];
    for (dump, want, forbidden) in cases {
        for chunk in [1, 2, 5, 4096] {
            let (out, r) = filtered(dump, chunk);
            assert_eq!(out, *want, "chunk {chunk}: {dump:?}");
            match forbidden {
                Some(f) => assert!(r.forbidden.as_deref().is_some_and(|x| x.contains(f)), "{dump:?}: {:?}", r.forbidden),
                None => assert_eq!(r.forbidden, None, "{dump:?}"),
            }
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
        let (out, r) = filtered(&dump, chunk);
        assert_eq!(out, dump);
        assert_eq!(r.tables.get("public.wide"), Some(&1), "chunk {chunk}");
        assert!(r.complete, "chunk {chunk}");
    }
}

const PRIVILEGED: &str = "SET x = 1;\nCREATE TABLE public.t (a integer);\nALTER TABLE public.t OWNER TO app;\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a);\nCOPY public.t (a) FROM stdin;\n1\nGRANT x\n\\.\nALTER SCHEMA s OWNER TO \"App Owner\";\nSET SESSION AUTHORIZATION grantor;\nGRANT SELECT ON TABLE public.t TO via_grantor;\nRESET SESSION AUTHORIZATION;\nGRANT SELECT ON TABLE public.t TO ro;\nGRANT SELECT(a) ON TABLE public.t TO colreader;\nREVOKE ALL ON SCHEMA public FROM PUBLIC;\nALTER DEFAULT PRIVILEGES FOR ROLE app GRANT SELECT ON TABLES TO ro;\nCREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$\nGRANT SELECT ON TABLE public.t TO inside_body;\n$$;\nALTERNATIVE;\nGRA;\n--\n-- PostgreSQL database dump complete\n--\n";

fn stripped(dump: &str, strip: Strip, chunk: usize) -> (String, ScanResult) {
    let mut s = DumpScanner::stripping(strip);
    let mut out = Vec::new();
    for c in dump.as_bytes().chunks(chunk) {
        s.feed_filtered(c, &mut out);
    }
    (String::from_utf8(out).unwrap(), s.finish())
}

#[test]
fn privilege_statements_are_left_out_only_as_asked() {
    for chunk in [1, 3, 17, 4096] {
        let (all, r) = stripped(PRIVILEGED, Strip::Nothing, chunk);
        assert_eq!(all, PRIVILEGED, "chunk {chunk}");
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
        for kept in [
            "GRANT x\n",
            "inside_body",
            "ADD CONSTRAINT t_pkey",
            "ALTERNATIVE;\n",
            "GRA;\n",
            "dump complete",
        ] {
            assert!(out.contains(kept), "chunk {chunk}: {kept} missing from {out}");
        }
        assert_eq!(r.privilege_lines_removed, 9);
        assert!(r.forbidden.is_none());
    }
}
