//! The allowlist against what pg_dump writes and what it never does.

use super::*;

fn decide(sql: &str) -> Vec<Decision> {
    let roles = KnownRoles(["app".to_string(), "Odd Role".to_string()].into_iter().collect());
    pg_query::parse(sql, 0)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .protobuf
        .stmts
        .iter()
        .map(|s| judge(s.stmt.as_ref().and_then(|n| n.node.as_ref()).expect("a statement"), &roles))
        .collect()
}

/// Statements pg_dump 13–18 writes in plain dumps pass (or are recognised for what they are).
#[test]
fn what_pg_dump_writes_is_allowed() {
    let cases: &[(&str, Decision)] = &[
        ("SET statement_timeout = 0;", Decision::Pass),
        ("SET transaction_timeout = 0;", Decision::Pass),
        ("SET client_encoding = 'UTF8';", Decision::Pass),
        ("SET client_encoding = 'LATIN1';", Decision::Pass),
        ("SET standard_conforming_strings = on;", Decision::Pass),
        ("SELECT pg_catalog.set_config('search_path', '', false);", Decision::Pass),
        ("SET check_function_bodies = false;", Decision::Pass),
        ("SET xmloption = content;", Decision::Pass),
        ("SET client_min_messages = warning;", Decision::Pass),
        ("SET row_security = off;", Decision::Pass),
        ("SET default_tablespace = '';", Decision::Pass),
        ("SET default_table_access_method = heap;", Decision::Pass),
        ("SET ROLE app;", Decision::Pass),
        ("SET SESSION AUTHORIZATION 'Odd Role';", Decision::Ownership),
        ("RESET SESSION AUTHORIZATION;", Decision::Ownership),
        ("CREATE SCHEMA billing;", Decision::Pass),
        ("CREATE EXTENSION IF NOT EXISTS hstore WITH SCHEMA public;", Decision::Pass),
        ("COMMENT ON EXTENSION hstore IS 'data type for storing sets of (key, value) pairs';", Decision::Pass),
        ("CREATE TYPE billing.status AS ENUM ('open', 'paid');", Decision::Pass),
        ("CREATE DOMAIN billing.positive AS numeric CONSTRAINT positive_check CHECK ((VALUE > (0)::numeric));", Decision::Pass),
        ("CREATE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$;", Decision::Pass),
        ("CREATE FUNCTION public.g() RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT 1; END;", Decision::Pass),
        ("CREATE PROCEDURE billing.p() LANGUAGE plpgsql AS $_$ BEGIN COMMIT; END $_$;", Decision::Pass),
        ("CREATE TABLE billing.events (id bigint NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);", Decision::Pass),
        ("CREATE TABLE billing.e2025 (id bigint NOT NULL, at date NOT NULL);", Decision::Pass),
        ("ALTER TABLE ONLY billing.events ATTACH PARTITION billing.e2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');", Decision::Pass),
        ("ALTER TABLE billing.events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME billing.events_id_seq START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1);", Decision::Pass),
        ("CREATE SEQUENCE public.s START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;", Decision::Pass),
        ("ALTER SEQUENCE public.s OWNED BY public.t.id;", Decision::Pass),
        ("CREATE VIEW public.v AS SELECT 1 AS one;", Decision::Pass),
        ("CREATE MATERIALIZED VIEW billing.totals AS SELECT 1 AS n WITH NO DATA;", Decision::Pass),
        ("REFRESH MATERIALIZED VIEW billing.totals;", Decision::Pass),
        ("ALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);", Decision::Pass),
        ("CREATE INDEX places_area ON public.places USING gist (area);", Decision::Pass),
        ("ALTER INDEX public.p_pkey ATTACH PARTITION public.c_pkey;", Decision::Pass),
        ("CREATE TRIGGER tr AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();", Decision::Pass),
        ("ALTER TABLE public.secured ENABLE ROW LEVEL SECURITY;", Decision::Pass),
        ("CREATE POLICY p ON public.secured USING ((tenant = 0));", Decision::Pass),
        ("CREATE RULE \"_RETURN\" AS ON SELECT TO public.v DO INSTEAD SELECT 1 AS one;", Decision::Pass),
        ("COPY public.t (a, b) FROM stdin;", Decision::Copy),
        ("SELECT pg_catalog.setval('public.s', 42, true);", Decision::Pass),
        ("SELECT pg_catalog.lo_create('16394');", Decision::Pass),
        ("SELECT pg_catalog.lo_open('16394', 131072);", Decision::Pass),
        ("SELECT pg_catalog.lowrite(0, '\\x6c6172676520');", Decision::Pass),
        ("SELECT pg_catalog.lo_close(0);", Decision::Pass),
        ("BEGIN;", Decision::Begin),
        ("COMMIT;", Decision::Commit),
        ("ALTER TABLE public.t OWNER TO app;", Decision::Ownership),
        ("ALTER SCHEMA billing OWNER TO app;", Decision::Ownership),
        ("ALTER LARGE OBJECT 16394 OWNER TO app;", Decision::Ownership),
        ("GRANT SELECT ON TABLE public.t TO app;", Decision::Grant),
        ("REVOKE ALL ON SCHEMA public FROM PUBLIC;", Decision::Grant),
        ("ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO app;", Decision::Grant),
        ("CREATE PUBLICATION pub FOR ALL TABLES WITH (publish = 'insert');", Decision::Pass),
        ("CREATE SUBSCRIPTION sub CONNECTION 'host=x' PUBLICATION pub WITH (connect = false, slot_name = 'sub');", Decision::Subscription),
        ("ALTER SUBSCRIPTION sub OWNER TO app;", Decision::Subscription),
        ("COMMENT ON SUBSCRIPTION sub IS 'from the primary';", Decision::Subscription),
        ("SECURITY LABEL FOR dummy ON SUBSCRIPTION sub IS 'x';", Decision::Subscription),
        ("CREATE STATISTICS public.st ON a, b FROM public.t;", Decision::Pass),
        ("SECURITY LABEL FOR dummy ON TABLE public.t IS 'classified';", Decision::Pass),
        ("SELECT * FROM pg_catalog.pg_restore_relation_stats('version', '180000'::integer, 'schemaname', 'public', 'relname', 't', 'relpages', '1'::integer, 'reltuples', '3'::real);", Decision::Pass),
    ];
    for (sql, want) in cases {
        assert_eq!(decide(sql), vec![want.clone()], "{sql}");
    }
}

/// Everything else is refused, whatever its spelling.
#[test]
fn everything_else_is_refused() {
    let cases: &[(&str, &str)] = &[
        ("COMMIT AND CHAIN;", "COMMIT AND CHAIN"),
        ("ROLLBACK;", "ROLLBACK"),
        ("ABORT;", "ROLLBACK"),
        ("START TRANSACTION;", "BEGIN or START"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE;", "BEGIN or START"),
        ("SAVEPOINT s;", "SAVEPOINT"),
        ("ROLLBACK TO SAVEPOINT s;", "ROLLBACK TO"),
        ("PREPARE TRANSACTION 'x';", "PREPARE TRANSACTION"),
        ("COMMIT PREPARED 'x';", "COMMIT PREPARED"),
        ("ALTER SYSTEM SET archive_command = 'id';", "ALTER SYSTEM"),
        ("COPY public.t FROM PROGRAM 'id';", "program"),
        ("COPY public.t TO '/tmp/x';", "file on the server"),
        ("COPY public.t FROM '/etc/passwd';", "file on the server"),
        ("COPY public.t TO stdout;", "COPY other than"),
        ("COPY (SELECT 1) TO stdout;", "COPY other than"),
        ("COPY public.t FROM stdin WITH (FORMAT csv);", "COPY other than"),
        ("CREATE DATABASE x;", "CREATE DATABASE"),
        ("DROP DATABASE x;", "DROP DATABASE"),
        ("ALTER DATABASE x SET search_path = evil;", "ALTER DATABASE"),
        ("SET ROLE postgres;", "does not name"),
        ("SET SESSION AUTHORIZATION postgres;", "does not name"),
        ("LOAD 'evil';", "LOAD"),
        ("DO $$ BEGIN PERFORM 1; END $$;", "DO"),
        ("CALL public.p();", "CALL"),
        ("SET standard_conforming_strings = off;", "standard_conforming_strings"),
        ("SET client_encoding = 'SJIS';", "client_encoding"),
        ("SET client_encoding TO 'big5';", "client_encoding"),
        ("SET backslash_quote = on;", "backslash_quote"),
        ("SET LOCAL search_path = x; ", "SET LOCAL"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY;", "SET"),
        ("RESET ALL;", "SET"),
        (
            "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);",
            "other than search_path",
        ),
        ("SELECT pg_sleep(100);", "pg_sleep"),
        ("SELECT pg_catalog.pg_sleep(100);", "pg_sleep"),
        ("SELECT setval('s', 1);", "setval"),
        ("SELECT pg_catalog.setval('s', (SELECT max(id) FROM public.t));", "constants"),
        (
            "SELECT pg_catalog.lo_open('1', 131072), pg_catalog.pg_terminate_backend(1);",
            "query",
        ),
        ("SELECT pg_catalog.lowrite(0, 'x'::public.evil);", "constants"),
        ("SELECT pg_catalog.lo_close(0) FROM public.t;", "query"),
        ("SELECT * FROM public.t;", "query"),
        ("WITH x AS (SELECT 1) SELECT pg_catalog.lo_close(0);", "query"),
        ("INSERT INTO public.t VALUES (1);", "INSERT"),
        ("DELETE FROM public.t;", "DELETE"),
        ("DROP TABLE public.t;", "DROP"),
        ("TRUNCATE public.t;", "TRUNCATE"),
        ("CREATE ROLE evil SUPERUSER;", "CREATE ROLE"),
        ("ALTER ROLE app SUPERUSER;", "ALTER ROLE"),
        ("GRANT pg_execute_server_program TO app;", "GRANT of a role"),
        ("CREATE TABLE x AS SELECT pg_catalog.pg_sleep(1);", "CREATE TABLE AS"),
        ("CREATE MATERIALIZED VIEW m AS SELECT 1;", "CREATE TABLE AS"),
        ("CREATE SCHEMA s CREATE TABLE t (a int);", "embedded"),
        ("CREATE SUBSCRIPTION s CONNECTION 'host=evil' PUBLICATION p;", "connect = false"),
        (
            "CREATE SUBSCRIPTION s CONNECTION 'host=evil' PUBLICATION p WITH (connect = true);",
            "connect = false",
        ),
        ("ALTER SUBSCRIPTION sub ENABLE;", "ALTER SUBSCRIPTION"),
        ("ALTER SUBSCRIPTION sub RENAME TO other;", "RENAME"),
        ("ALTER SUBSCRIPTION sub SET PUBLICATION p;", "ALTER SUBSCRIPTION"),
        ("ALTER SUBSCRIPTION sub REFRESH PUBLICATION;", "ALTER SUBSCRIPTION"),
        ("DROP SUBSCRIPTION sub;", "does not write"),
        ("VACUUM;", "VACUUM"),
        ("CHECKPOINT;", "CHECKPOINT"),
        ("LOCK public.t;", "LOCK"),
        ("NOTIFY x;", "NOTIFY"),
        ("PREPARE q AS SELECT 1;", "PREPARE"),
        ("EXECUTE q;", "PREPARE or EXECUTE"),
        ("DISCARD ALL;", "DISCARD"),
        ("ALTER TABLE public.t RENAME TO u;", "RENAME"),
        ("ALTER EXTENSION hstore UPDATE;", "ALTER EXTENSION"),
        ("REASSIGN OWNED BY app TO postgres;", "REASSIGN"),
        ("EXPLAIN ANALYZE SELECT 1;", "does not write"),
        ("CREATE TABLESPACE t LOCATION '/tmp';", "TABLESPACE"),
        ("ALTER DATABASE postgres OWNER TO app;", "OWNER of a database"),
        ("ALTER TABLESPACE pg_default OWNER TO app;", "OWNER of a tablespace"),
        ("GRANT ALL ON DATABASE postgres TO app;", "on a database"),
        ("GRANT ALTER SYSTEM ON PARAMETER archive_command TO PUBLIC;", "on a server setting"),
        ("GRANT CREATE ON TABLESPACE pg_default TO app;", "on a tablespace"),
        ("COMMENT ON ROLE app IS 'x';", "COMMENT ON a role"),
        ("COMMENT ON DATABASE postgres IS 'x';", "COMMENT ON a database"),
        ("SECURITY LABEL FOR dummy ON ROLE app IS 'x';", "SECURITY LABEL ON a role"),
        ("SET statement_timeout = 1;", "pg_dump sets 0"),
        ("SET idle_in_transaction_session_timeout = '1ms';", "pg_dump sets 0"),
    ];
    for (sql, why) in cases {
        match decide(sql).as_slice() {
            [Decision::Refuse(r)] => assert!(r.contains(why), "{sql}: {r}"),
            other => panic!("{sql} not refused: {other:?}"),
        }
    }
}

#[test]
fn encodings_are_judged_by_how_psql_reads_them() {
    for safe in ["UTF8", "utf-8", "LATIN1", "WIN1252", "EUC_JP", "SQL_ASCII", "KOI8-R", "Unicode"] {
        assert!(safe_encoding(safe), "{safe}");
    }
    for unsafe_ in [
        "SJIS",
        "Shift_JIS",
        "BIG5",
        "GBK",
        "UHC",
        "GB18030",
        "JOHAB",
        "WIN932",
        "Windows950",
        "mskanji",
    ] {
        assert!(!safe_encoding(unsafe_), "{unsafe_}");
    }
}
