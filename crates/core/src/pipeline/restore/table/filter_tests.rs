use super::*;

/// A dump as pg_dump 15 writes it, cut down: a table with a serial key, a partitioned table, a
/// table with a foreign key to the first, indexes, a trigger, a policy, comments, grants,
/// sequence values and a large object.
const DUMP: &str = r#"--
-- PostgreSQL database dump
--

\restrict abc123

SET statement_timeout = 0;
SET lock_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: invoices; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.invoices (
    id integer NOT NULL,
    total numeric
);


ALTER TABLE public.invoices OWNER TO app;

--
-- Name: TABLE invoices; Type: COMMENT; Schema: public; Owner: app
--

COMMENT ON TABLE public.invoices IS 'money; public.lines';

CREATE SEQUENCE public.invoices_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.invoices_id_seq OWNED BY public.invoices.id;

CREATE TABLE public.lines (
    invoice_id integer,
    body text
);

CREATE TABLE public.m (
    at date NOT NULL,
    v integer
)
PARTITION BY RANGE (at);

CREATE TABLE public.m_2024 (
    at date NOT NULL,
    v integer
);

CREATE FUNCTION public.touch() RETURNS trigger
    LANGUAGE plpgsql
    AS $$BEGIN
  -- COPY public.invoices FROM stdin;
  RETURN NEW;
END$$;

ALTER TABLE ONLY public.m ATTACH PARTITION public.m_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');

ALTER TABLE ONLY public.invoices ALTER COLUMN id SET DEFAULT nextval('public.invoices_id_seq'::regclass);

COPY public.invoices (id, total) FROM stdin;
1	10
2	20
\.

COPY public.lines (invoice_id, body) FROM stdin;
1	a
\.

COPY public.m_2024 (at, v) FROM stdin;
2024-02-01	1
\.

SELECT pg_catalog.setval('public.invoices_id_seq', 2, true);

SELECT pg_catalog.setval('public.lines_seq', ('public.invoices'::regclass)::oid::bigint, true);

SELECT pg_catalog.setval('public.invoices_id_seq', 7, true), pg_catalog.setval('public.lines_seq', 1, true);

SELECT pg_catalog.lo_create('16400');

ALTER TABLE ONLY public.invoices
    ADD CONSTRAINT invoices_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.m
    ADD CONSTRAINT m_pkey PRIMARY KEY (at);

ALTER TABLE ONLY public.m_2024
    ADD CONSTRAINT m_2024_pkey PRIMARY KEY (at);

CREATE INDEX invoices_total ON public.invoices USING btree (total);

CREATE STATISTICS public.invoices_stats (ndistinct) ON id, total FROM public.invoices;

ALTER STATISTICS public.invoices_stats OWNER TO app;

COMMENT ON STATISTICS public.invoices_stats IS 'pairs';

CREATE STATISTICS public.lines ON id, total FROM public.invoices;

CREATE STATISTICS public.lines_stats ON invoice_id, body FROM public.lines;

ALTER STATISTICS public.lines_stats OWNER TO app;

SECURITY LABEL FOR dummy ON TABLE public.invoices IS 'classified';

SECURITY LABEL FOR dummy ON COLUMN public.invoices.total IS 'secret';

SECURITY LABEL FOR dummy ON TABLE public.lines IS 'other';

ALTER INDEX public.m_pkey ATTACH PARTITION public.m_2024_pkey;

CREATE TRIGGER t BEFORE INSERT ON public.invoices FOR EACH ROW EXECUTE FUNCTION public.touch();

ALTER TABLE ONLY public.lines
    ADD CONSTRAINT lines_invoice_fkey FOREIGN KEY (invoice_id) REFERENCES public.invoices(id);

ALTER TABLE ONLY public.invoices
    ADD CONSTRAINT invoices_self_fkey FOREIGN KEY (id) REFERENCES public.invoices(id);

ALTER TABLE ONLY public.invoices
    ADD CONSTRAINT invoices_m_fkey FOREIGN KEY (id) REFERENCES public.lines(invoice_id);

CREATE POLICY p ON public.invoices USING ((total > (0)::numeric));

ALTER TABLE public.invoices ENABLE ROW LEVEL SECURITY;

GRANT SELECT ON TABLE public.invoices TO reader;

GRANT SELECT ON TABLE public.lines TO reader;

--
-- PostgreSQL database dump complete
--

\unrestrict abc123

"#;

fn filter(table: &str, outside_keys: bool, chunk: usize) -> (String, Filter) {
    let mut f = Filter::new(Family::new(Name::parse(table).unwrap(), outside_keys), "st");
    let mut out = Vec::new();
    for piece in DUMP.as_bytes().chunks(chunk) {
        f.feed(piece, &mut out);
    }
    f.finish(&mut out);
    (String::from_utf8(out).unwrap(), f)
}

#[test]
fn one_table_keeps_its_definition_sequence_data_and_post_data_restaged() {
    for chunk in [1, 7, 4096] {
        let (out, f) = filter("public.invoices", false, chunk);
        assert_eq!(f.error, None);
        let has = |s: &str| out.contains(s);
        assert!(has("\\restrict abc123\n") && has("\\unrestrict abc123\n"), "{out}");
        assert!(has("SET statement_timeout = 0;") && has("set_config('search_path'"));
        // pgvigil's own lock_timeout stands in the live database.
        assert!(!has("lock_timeout"), "{out}");
        assert!(has("CREATE TABLE st.invoices ("));
        assert!(has("ALTER TABLE st.invoices OWNER TO app;"));
        assert!(has("COMMENT ON TABLE st.invoices IS 'money; public.lines';"));
        assert!(has("CREATE SEQUENCE st.invoices_id_seq"));
        assert!(has("ALTER SEQUENCE st.invoices_id_seq OWNED BY st.invoices.id;"));
        assert!(has("SET DEFAULT nextval('st.invoices_id_seq'::regclass);"));
        assert!(has("COPY st.invoices (id, total) FROM stdin;\n1\t10\n2\t20\n\\.\n"));
        assert!(has("SELECT pg_catalog.setval('st.invoices_id_seq', 2, true);"));
        assert!(has("ADD CONSTRAINT invoices_pkey PRIMARY KEY (id);"));
        assert!(has("CREATE INDEX invoices_total ON st.invoices"));
        assert!(has(
            "CREATE TRIGGER t BEFORE INSERT ON st.invoices FOR EACH ROW EXECUTE FUNCTION public.touch();"
        ));
        assert!(has("REFERENCES st.invoices(id)"), "a key to itself is kept");
        assert!(has("CREATE POLICY p ON st.invoices") && has("ALTER TABLE st.invoices ENABLE ROW LEVEL SECURITY;"));
        assert!(has("GRANT SELECT ON TABLE st.invoices TO reader;"));
        // Extended statistics and security labels of the table, restaged.
        assert!(
            has("CREATE STATISTICS st.invoices_stats (ndistinct) ON id, total FROM st.invoices;"),
            "{out}"
        );
        assert!(has("ALTER STATISTICS st.invoices_stats OWNER TO app;"));
        assert!(has("COMMENT ON STATISTICS st.invoices_stats IS 'pairs';"));
        assert!(has("SECURITY LABEL FOR dummy ON TABLE st.invoices IS 'classified';"));
        assert!(has("SECURITY LABEL FOR dummy ON COLUMN st.invoices.total IS 'secret';"));
        // A statistics object named like another table (public.lines): only statistics
        // statements move it (see replace_keeps_keys_to_other_tables).
        assert!(has("CREATE STATISTICS st.lines ON id, total FROM st.invoices;"), "{out}");
        // Nothing of the other tables, the function or the large object.
        for other in [
            "CREATE TABLE public.lines",
            "lines_invoice_fkey",
            "public.m",
            "touch() RETURNS",
            "lo_create",
            "1\ta",
            "lines_stats",
            "'other'",
        ] {
            assert!(!has(other), "{other} in {out}");
        }
        assert_eq!(f.rows, BTreeMap::from([("public.invoices".to_string(), 2)]));
        assert_eq!(f.left_out, ["foreign key invoices_m_fkey of public.invoices to public.lines"]);
    }
}

#[test]
fn replace_keeps_keys_to_other_tables() {
    let (out, f) = filter("public.invoices", true, 4096);
    assert!(out.contains("ADD CONSTRAINT invoices_m_fkey FOREIGN KEY (id) REFERENCES public.lines(invoice_id);"));
    assert!(f.left_out.is_empty());
}

#[test]
fn a_partitioned_table_comes_with_its_partitions_and_their_indexes() {
    let (out, f) = filter("public.m", false, 4096);
    assert_eq!(f.error, None);
    for want in [
        "CREATE TABLE st.m (",
        "CREATE TABLE st.m_2024 (",
        "ALTER TABLE ONLY st.m ATTACH PARTITION st.m_2024 FOR VALUES",
        "COPY st.m_2024 (at, v) FROM stdin;\n2024-02-01\t1\n\\.\n",
        "ADD CONSTRAINT m_pkey PRIMARY KEY (at);",
        "ADD CONSTRAINT m_2024_pkey PRIMARY KEY (at);",
        "ALTER INDEX st.m_pkey ATTACH PARTITION st.m_2024_pkey;",
    ] {
        assert!(out.contains(want), "{want} missing from {out}");
    }
    assert!(!out.contains("invoices"));
    assert_eq!(f.rows, BTreeMap::from([("public.m_2024".to_string(), 1)]));
    assert!(f.family().has(&Name::new("public", "m_2024")));
}

#[test]
fn a_table_the_dump_does_not_hold_yields_settings_only() {
    let (out, f) = filter("public.nope", false, 4096);
    assert!(!out.contains("CREATE") && !out.contains("COPY"), "{out}");
    assert!(f.rows.is_empty());
}

#[test]
fn a_dump_cut_inside_a_copy_block_is_an_error() {
    let cut = DUMP.find("2\t20").unwrap();
    let mut f = Filter::new(Family::new(Name::new("public", "invoices"), false), "st");
    let mut out = Vec::new();
    f.feed(&DUMP.as_bytes()[..cut], &mut out);
    f.finish(&mut out);
    assert_eq!(f.error.as_deref(), Some("the backup ends inside a COPY block"));
}

#[test]
fn only_setval_of_a_family_sequence_with_constants_passes() {
    let (out, _) = filter("public.invoices", false, 4096);
    assert_eq!(out.matches("setval(").count(), 1, "{out}");
    assert!(!out.contains("lines_seq"), "{out}");
}

#[test]
fn names_with_quotes_are_found_after_the_data_too() {
    let dump = "CREATE TABLE public.\"Odd \"\"Name\"\"\" (k integer NOT NULL);\n\nCOPY public.\"Odd \"\"Name\"\"\" (k) FROM stdin;\n1\n\\.\n\nALTER TABLE ONLY public.\"Odd \"\"Name\"\"\"\n    ADD CONSTRAINT \"Odd \"\"Name\"\"_pkey\" PRIMARY KEY (k);\n\n";
    let mut f = Filter::new(Family::new(Name::new("public", "Odd \"Name\""), false), "st");
    let mut out = Vec::new();
    f.feed(dump.as_bytes(), &mut out);
    f.finish(&mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("ALTER TABLE ONLY st.\"Odd \"\"Name\"\"\"\n    ADD CONSTRAINT"),
        "{out}"
    );
    assert_eq!(f.rows.values().sum::<u64>(), 1);
}

#[test]
fn sql_that_is_not_utf8_is_refused_not_rewritten() {
    let mut f = Filter::new(Family::new(Name::new("public", "t"), false), "st");
    let mut out = Vec::new();
    f.feed(b"CREATE TABLE public.t (caf\xe9 integer);\n", &mut out);
    f.finish(&mut out);
    assert!(
        f.unsupported.as_deref().is_some_and(|w| w.contains("not UTF-8")),
        "{:?}",
        f.unsupported
    );
    assert!(out.is_empty());
}

#[test]
fn a_piece_of_several_statements_passes_only_when_each_is_about_the_table() {
    let dump = "CREATE TABLE public.t (id integer);\n\
                SET statement_timeout = 0; ALTER TABLE public.accounts DROP COLUMN balance;\n\
                ALTER TABLE public.t OWNER TO app; ALTER TABLE public.accounts OWNER TO x;\n\
                SELECT pg_catalog.setval('public.t_seq', 1); SELECT * FROM pg_catalog.setval($$public.other_seq$$, 9);\n\
                SELECT pg_catalog.setval($$public.t$$, 9);\n\
                ALTER TABLE public.t OWNER TO app; COMMENT ON TABLE public.t IS 'x';\n";
    let mut f = Filter::new(Family::new(Name::new("public", "t"), false), "st");
    let mut out = Vec::new();
    f.feed(dump.as_bytes(), &mut out);
    f.finish(&mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("accounts") && !out.contains("setval"), "{out}");
    assert!(
        out.contains("CREATE TABLE st.t") && out.contains("ALTER TABLE st.t OWNER TO app; COMMENT ON TABLE st.t IS 'x';"),
        "{out}"
    );
}

#[test]
fn the_guard_expects_what_the_contents_list_on_the_family_but_keys_left_out() {
    use crate::records::manifest::TocEntry;
    let entry = |kind: &str, schema: &str, name: &str| TocEntry {
        kind: kind.into(),
        schema: schema.into(),
        name: name.into(),
    };
    let toc = [
        entry("TABLE", "public", "invoices"),
        entry("INDEX", "public", "invoices_total"),
        entry("CONSTRAINT", "public", "invoices invoices_pkey"),
        entry("FK CONSTRAINT", "public", "invoices invoices_m_fkey"),
        entry("TRIGGER", "public", "invoices t"),
        entry("POLICY", "public", "invoices own rows"),
        entry("CONSTRAINT", "public", "lines lines_pkey"),
        entry("CONSTRAINT", "other", "invoices invoices_pkey"),
        entry("CONSTRAINT", "public", "invoices_x invoices_x_pkey"),
        // Another table whose name begins with the family's and a space: its constraint is not
        // taken for one of the family's.
        entry("TABLE", "public", "invoices 2023"),
        entry("CONSTRAINT", "public", "invoices 2023 invoices 2023_pkey"),
    ];
    let names = |want: &[TocEntry]| {
        want.iter()
            .map(|e| format!("{} {}.{}", e.kind, e.schema, e.name))
            .collect::<Vec<_>>()
    };
    // A copy: the key to public.lines is left out, so it is not expected.
    let (_, f) = filter("public.invoices", false, 4096);
    assert_eq!(
        names(&f.family().expected(&toc, "st")),
        [
            "CONSTRAINT st.invoices invoices_pkey",
            "TRIGGER st.invoices t",
            "POLICY st.invoices own rows"
        ]
    );
    // In place: every key comes back.
    let (_, f) = filter("public.invoices", true, 4096);
    assert_eq!(names(&f.family().expected(&toc, "st")).len(), 4);
}
