//! The gate against hostile candidates, one at a time.

use super::*;

fn run(gate: &mut Gate, sql: &str) -> Result<String, Refusal> {
    let mut out = Vec::new();
    gate.candidate(sql.as_bytes(), false, 1, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn transaction_lines_only_around_large_objects() {
    let mut g = Gate::default();
    assert_eq!(run(&mut g, "\nBEGIN;\n").unwrap(), "");
    assert_eq!(
        run(&mut g, "SELECT pg_catalog.lo_open('1', 131072);\n").unwrap(),
        "SELECT pg_catalog.lo_open('1', 131072);\n"
    );
    assert!(run(&mut g, "BEGIN;\n").is_err(), "a second BEGIN");
    let mut g = Gate::default();
    run(&mut g, "BEGIN;\n").unwrap();
    assert_eq!(run(&mut g, "COMMIT;\n").unwrap(), "");
    for escape in ["COMMIT;\n", "END;\n", "end transaction;\n", "ABORT;\n", "SELECT 1; COMMIT;\n"] {
        let err = run(&mut g, escape).unwrap_err();
        assert!(matches!(err, Refusal::Statement { .. }), "{escape:?}: {err}");
    }
    let mut g = Gate::default();
    assert!(run(&mut g, "BEGIN; SET row_security = off;\n").is_err());
}

#[test]
fn backslashes_variables_and_lexing_tricks_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("SET row_security = off; \\! id\n", "psql command"),
        // The rest after a psql command may stop PostgreSQL's lexer (trailing junk after a
        // number, as in a random key): the command is still named.
        ("SET row_security = off; \\! touch x\n\\unrestrict 9abc\n", "psql command"),
        ("COMMENT ON TABLE t IS 'x' \\gexec\n", "psql command"),
        ("SELECT pg_catalog.setval('s', 1) \\g /tmp/x\n", "psql command"),
        ("CREATE TABLE t (a int);\\\\! id\n", "psql command"),
        ("CREATE VIEW v AS SELECT :VERSION AS x;\n", "psql variable VERSION"),
        ("CREATE VIEW v AS SELECT a[1:DBNAME] FROM t;\n", "psql variable DBNAME"),
        ("COMMENT ON TABLE t IS :'USER';\n", "psql variable USER"),
        ("COMMENT ON TABLE t IS :\"HOST\";\n", "psql variable HOST"),
        ("SELECT pg_catalog.setval('s', 1)\0;\n", "NUL"),
        ("CREATE TABLE t (a int\n", "parser"),
        ("SET client_encoding = 'SJIS';\n", "client_encoding"),
    ];
    for (sql, want) in cases {
        let err = run(&mut Gate::default(), sql).unwrap_err().to_string();
        assert!(err.contains(want), "{sql:?}: {err}");
    }
    // Slices, casts and assignments that look like variables are not.
    for fine in [
        "CREATE VIEW v AS SELECT a[1:n], b::text, (c)[lo:hi] FROM t;\n",
        "COMMENT ON TABLE t IS ':VERSION and \\! are only words here';\n",
        "-- :VERSION \\! in a comment\nCREATE TABLE t (a int);\n",
    ] {
        assert_eq!(run(&mut Gate::default(), fine).unwrap(), fine);
    }
}

#[test]
fn text_read_differently_under_other_settings_goes_alone_after_a_reset() {
    let mut g = Gate::default();
    run(&mut g, "SET client_encoding = 'LATIN1';\n").unwrap();
    let sql = "COMMENT ON TABLE t IS 'ends with a backslash\\';\n";
    assert_eq!(
        run(&mut g, sql).unwrap(),
        format!("SET standard_conforming_strings = on;\nSET client_encoding = 'latin1';\n{sql}")
    );
    let two = "COMMENT ON TABLE t IS 'a\\'; COMMENT ON TABLE u IS 'b';\n";
    assert!(run(&mut g, two).is_err());
    let plain = "COMMENT ON TABLE t IS 'no backslash before a quote \\x';\n";
    assert_eq!(run(&mut g, plain).unwrap(), plain);
}

#[test]
fn only_the_dumps_own_restrict_lines_are_dropped() {
    let mut g = Gate::default();
    assert!(g.command_line(b"\\restrict Abc123", 1).is_ok());
    assert!(g.command_line(b"\\restrict Abc123", 2).is_err(), "twice");
    assert!(g.command_line(b"\\unrestrict Abc123", 3).is_ok());
    for bad in [
        &b"\\! id"[..],
        b"\\unrestrict",
        b"\\restrict a b",
        b"\\restrict a;b",
        b"\\connect x",
        b"\\copy t to '/tmp/x'",
    ] {
        assert!(Gate::default().command_line(bad, 1).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn privilege_statements_are_left_out_as_asked() {
    let rules = |strip| GateRules {
        strip,
        roles: KnownRoles(["app".to_string()].into_iter().collect()),
    };
    let owner = "ALTER TABLE public.t OWNER TO app;\n";
    let grant = "GRANT SELECT ON TABLE public.t TO app;\n";
    let session = "SET SESSION AUTHORIZATION app;\n";
    assert_eq!(run(&mut Gate::new(rules(Strip::Nothing)), owner).unwrap(), owner);
    assert_eq!(run(&mut Gate::new(rules(Strip::Ownership)), owner).unwrap(), "");
    assert_eq!(run(&mut Gate::new(rules(Strip::Ownership)), session).unwrap(), "");
    assert_eq!(run(&mut Gate::new(rules(Strip::Ownership)), grant).unwrap(), grant);
    assert_eq!(run(&mut Gate::new(rules(Strip::OwnershipAndGrants)), grant).unwrap(), "");
    assert!(run(&mut Gate::new(rules(Strip::Nothing)), "SET SESSION AUTHORIZATION postgres;\n").is_err());
}

#[test]
fn subscription_statements_are_dropped_counted_and_never_hide_others() {
    let mut g = Gate::default();
    for sql in [
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (connect = false, slot_name = 's');\n",
        "ALTER SUBSCRIPTION s OWNER TO app;\n",
        "COMMENT ON SUBSCRIPTION s IS 'x';\n",
    ] {
        let mut out = Vec::new();
        let passed = g.candidate(sql.as_bytes(), false, 1, &mut out).unwrap();
        assert!(out.is_empty(), "{sql:?} reached psql");
        assert_eq!(passed.subscription_lines, 1, "{sql:?}");
    }
    for hidden in [
        "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p WITH (connect = false); CREATE TABLE t (a int);\n",
        "COMMENT ON SUBSCRIPTION s IS 'x'; ALTER TABLE t OWNER TO app;\n",
    ] {
        let err = run(&mut Gate::default(), hidden).unwrap_err().to_string();
        assert!(err.contains("subscription statement beside"), "{hidden:?}: {err}");
    }
    let err = run(&mut g, "CREATE SUBSCRIPTION s CONNECTION 'host=evil' PUBLICATION p;\n").unwrap_err();
    assert!(err.to_string().contains("connect = false"), "{err}");
}
