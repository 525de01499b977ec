//! pgvigil's own last statement of a one-table restore, run inside its transaction before the
//! COMMIT: it proves the table is there with the rows the manifest counts, then moves it out of
//! the staging schema under its new name (or, with `--replace`, in place of the live table, with
//! the other tables' foreign keys to it and the publications that name it dropped and added back)
//! and drops the staging schema — which fails if the backup left anything else in it. Any failure rolls everything back.
//!
//! The names travel as JSON in a dollar-quoted literal whose tag they do not contain, so nothing
//! from the backup or the command line is ever spliced into the SQL itself.

use super::names::Name;

/// SQLSTATE of "the restored table is not what the manifest says" (the backup's fault).
pub const WRONG_ROWS: &str = "PV002";
/// SQLSTATE of "the backup did not create the table".
pub const NOT_CREATED: &str = "PV001";
/// SQLSTATE of "the table's inheritance reaches outside the restore" (neither side's fault: a
/// one-table restore cannot make it).
pub const OUTSIDE: &str = "PV003";
/// SQLSTATE of "an object the backup's table of contents lists on the table was not rebuilt"
/// (raised by the guard before the epilogue): what a one-table restore could not carry over.
pub const INCOMPLETE: &str = "PV004";
/// SQLSTATE of "the replaced table could not be added back to a publication that named it" (the
/// restoring role does not own the publication, or its row filter or column list no longer fits).
pub const UNPUBLISHED: &str = "PV005";
/// SQLSTATE of PostgreSQL's `lock_not_available`: a live table stayed locked past [`LOCK_WAIT`].
pub const LOCKED: &str = "55P03";
/// The most the epilogue waits for a lock on a live table (the one `--replace` swaps out, and
/// those whose foreign keys point at it): waiting longer would hold up every query queued behind
/// it in the live database.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the epilogue does.
#[derive(Debug, Clone)]
pub struct Move {
    /// The staging schema.
    pub stage: String,
    /// The table as the backup named it.
    pub table: Name,
    /// Where it goes.
    pub to: Name,
    /// Rows the manifest counts for it (and its partitions).
    pub rows: u64,
    /// Drop the live table first (its place is taken).
    pub replace: bool,
    /// pgvigil's guard that every object the table of contents lists on the table was rebuilt
    /// (a statement, run once the table and its rows are proven there; empty: none).
    pub guard: String,
}

/// The epilogue's SQL.
pub fn sql(m: &Move) -> String {
    let json = serde_json::json!({
        "stage": m.stage,
        "schema": m.table.schema,
        "table": m.table.name,
        "to_schema": m.to.schema,
        "to_name": m.to.name,
        "rows": m.rows.to_string(),
        "replace": m.replace,
        "guard": m.guard,
    })
    .to_string();
    let data = super::super::toc::tag_for(&json);
    let body = super::super::toc::tag_for(&format!("{json}{data}"));
    let lock_ms = LOCK_WAIT.as_millis();
    format!(
        r#"DO {body}
DECLARE
  p pg_catalog.jsonb := {data}{json}{data}::pg_catalog.jsonb;
  stage pg_catalog.text := p->>'stage';
  src pg_catalog.text := p->>'schema';
  tab pg_catalog.text := p->>'table';
  dst pg_catalog.text := p->>'to_schema';
  new pg_catalog.text := p->>'to_name';
  want pg_catalog.int8 := (p->>'rows')::pg_catalog.int8;
  ns pg_catalog.oid;
  got pg_catalog.int8;
  r record;
  readd pg_catalog.text[] := '{{}}';
  live pg_catalog.regclass;
  fam pg_catalog.oid[];
  stmt pg_catalog.text;
  pubs pg_catalog.jsonb := '[]';
BEGIN
  PERFORM pg_catalog.set_config('search_path', '', true);
  PERFORM pg_catalog.set_config('lock_timeout', '{lock_ms}', true);
  SELECT n.oid INTO ns FROM pg_catalog.pg_namespace n WHERE n.nspname = stage;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace = ns AND c.relname = tab AND c.relkind IN ('r', 'p')) THEN
    RAISE EXCEPTION USING ERRCODE = '{NOT_CREATED}', MESSAGE = pg_catalog.format('the backup did not create table %I.%I', src, tab);
  END IF;
  -- Rows this transaction inserted into the staged relations (row-level security, which may hide
  -- rows from a restoring role that does not own the table, does not affect the count).
  IF pg_catalog.current_setting('track_counts')::pg_catalog.bool THEN
    SELECT COALESCE(pg_catalog.sum(s.n_tup_ins), 0) INTO got FROM pg_catalog.pg_stat_xact_user_tables s WHERE s.schemaname = stage;
  ELSE
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %I.%I', stage, tab) INTO got;
  END IF;
  IF got <> want THEN
    RAISE EXCEPTION USING ERRCODE = '{WRONG_ROWS}', MESSAGE = pg_catalog.format('%s rows of %I.%I were restored, but its manifest counts %s', got, src, tab, want);
  END IF;
  -- Nothing staged may inherit from, or be inherited by, a table outside the restore: a copy
  -- would add its rows to a live parent, or take in a live table.
  IF EXISTS (SELECT FROM pg_catalog.pg_inherits i
               JOIN pg_catalog.pg_class child ON child.oid = i.inhrelid
               JOIN pg_catalog.pg_class parent ON parent.oid = i.inhparent
              WHERE (child.relnamespace = ns) <> (parent.relnamespace = ns)) THEN
    RAISE EXCEPTION USING ERRCODE = '{OUTSIDE}', MESSAGE = pg_catalog.format(
      '%I.%I inherits from, or is a partition of, a table outside the restore (or the backup makes a live table part of it); restore its parent or partition root instead', src, tab);
  END IF;
  -- Everything the table of contents lists on the table was rebuilt (pgvigil's own statement).
  -- (Raised again from here, so that the error names this block, not the guard's whole text.)
  IF p->>'guard' <> '' THEN
    BEGIN
      EXECUTE p->>'guard';
    EXCEPTION WHEN SQLSTATE '{INCOMPLETE}' THEN
      RAISE EXCEPTION USING ERRCODE = '{INCOMPLETE}', MESSAGE = SQLERRM;
    END;
  END IF;
  IF (p->>'replace')::pg_catalog.bool THEN
    live := pg_catalog.format('%I.%I', dst, new)::pg_catalog.regclass;
    IF EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhrelid = live) THEN
      RAISE EXCEPTION USING ERRCODE = '{OUTSIDE}', MESSAGE = pg_catalog.format(
        'the live %I.%I is a partition or child of another table; --replace works on the root only: replace the root, or restore beside it and copy rows', dst, new);
    END IF;
    -- The table and, when partitioned, its partitions (pg_partition_tree lists no plain table).
    fam := ARRAY(SELECT live::pg_catalog.oid UNION SELECT t.relid::pg_catalog.oid FROM pg_catalog.pg_partition_tree(live) t);
    FOR r IN SELECT c.conrelid::pg_catalog.regclass::pg_catalog.text AS rel, c.conname, pg_catalog.pg_get_constraintdef(c.oid) AS def
               FROM pg_catalog.pg_constraint c
              WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid = ANY (fam) AND NOT c.conrelid = ANY (fam)
    LOOP
      readd := readd || pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', r.rel, r.conname, r.def);
      EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', r.rel, r.conname);
    END LOOP;
    -- Publications that name the live table or its partitions lose them with the DROP: each is
    -- added back (with its row filter and column list) once the restored tables are in place.
    IF pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 150000 THEN
      FOR r IN EXECUTE 'SELECT p.pubname, pr.prrelid::pg_catalog.regclass::pg_catalog.text AS rel,
                               pg_catalog.pg_get_expr(pr.prqual, pr.prrelid) AS qual,
                               (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), '', '' ORDER BY a.attnum)
                                  FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid = pr.prrelid AND a.attnum = ANY (pr.prattrs)) AS cols
                          FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                         WHERE pr.prrelid = ANY ($1)' USING fam
      LOOP
        pubs := pubs || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(r.rel, pg_catalog.format('ALTER PUBLICATION %I ADD TABLE ONLY %s%s%s', r.pubname, r.rel,
          CASE WHEN r.cols IS NULL THEN '' ELSE ' (' || r.cols || ')' END,
          CASE WHEN r.qual IS NULL THEN '' ELSE ' WHERE (' || r.qual || ')' END), r.pubname));
      END LOOP;
    ELSE
      FOR r IN SELECT p.pubname, pr.prrelid::pg_catalog.regclass::pg_catalog.text AS rel
                 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                WHERE pr.prrelid = ANY (fam)
      LOOP
        pubs := pubs || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_array(r.rel, pg_catalog.format('ALTER PUBLICATION %I ADD TABLE ONLY %s', r.pubname, r.rel), r.pubname));
      END LOOP;
    END IF;
    EXECUTE pg_catalog.format('DROP TABLE %I.%I', dst, new);
  END IF;
  IF new <> tab THEN
    -- Its partitions, sequences, indexes and extended statistics take the new name too.
    FOR r IN SELECT c.relname::pg_catalog.text AS name,
                    CASE WHEN c.relkind IN ('i', 'I') THEN 'INDEX' WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind
               FROM pg_catalog.pg_class c
              WHERE c.relnamespace = ns AND c.relname <> tab AND c.relkind IN ('r', 'p', 'S', 'i', 'I')
             UNION ALL
             SELECT s.stxname::pg_catalog.text, 'STATISTICS' FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace = ns
    LOOP
      EXECUTE pg_catalog.format('ALTER %s %I.%I RENAME TO %I', r.kind, stage, r.name,
        CASE WHEN pg_catalog.left(r.name, pg_catalog.length(tab)) = tab
             THEN new || pg_catalog.substr(r.name, pg_catalog.length(tab) + 1)
             ELSE new || '_' || r.name END);
    END LOOP;
    EXECUTE pg_catalog.format('ALTER TABLE %I.%I RENAME TO %I', stage, tab, new);
  END IF;
  FOR r IN SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relnamespace = ns AND c.relkind IN ('r', 'p') LOOP
    EXECUTE pg_catalog.format('ALTER TABLE %I.%I SET SCHEMA %I', stage, r.relname, dst);
  END LOOP;
  FOR r IN SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relnamespace = ns AND c.relkind = 'S' LOOP
    EXECUTE pg_catalog.format('ALTER SEQUENCE %I.%I SET SCHEMA %I', stage, r.relname, dst);
  END LOOP;
  -- Extended statistics do not move with their table.
  FOR r IN SELECT s.stxname FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace = ns LOOP
    EXECUTE pg_catalog.format('ALTER STATISTICS %I.%I SET SCHEMA %I', stage, r.stxname, dst);
  END LOOP;
  EXECUTE pg_catalog.format('DROP SCHEMA %I', stage);
  FOREACH stmt IN ARRAY readd LOOP
    EXECUTE stmt;
  END LOOP;
  -- A partition the backup does not have is gone, and so is its place in a publication.
  FOR r IN SELECT e->>0 AS rel, e->>1 AS stmt, e->>2 AS pub FROM pg_catalog.jsonb_array_elements(pubs) e LOOP
    IF pg_catalog.to_regclass(r.rel) IS NOT NULL THEN
      BEGIN
        EXECUTE r.stmt;
      EXCEPTION WHEN lock_not_available OR deadlock_detected THEN RAISE;
      WHEN OTHERS THEN
        RAISE EXCEPTION USING ERRCODE = '{UNPUBLISHED}', MESSAGE = pg_catalog.format(
          '%s could not be added back to publication %I (%s): take it out of the publication first (ALTER PUBLICATION %I DROP TABLE %s), run --replace again, then add it back as it was (%s); or restore it beside the live table', r.rel, r.pub, SQLERRM, r.pub, r.rel, r.stmt);
      END;
    END IF;
  END LOOP;
END {body};
"#
    )
}

/// The statement that opens the staging schema (before the backup's first statement).
pub fn open(stage: &str) -> String {
    format!("CREATE SCHEMA {};\n", super::names::ident(stage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_travel_as_data_and_the_body_parses() {
        let hostile = "x$pgvigil$'; DROP TABLE t; --";
        let m = Move {
            stage: "pgvigil_restore_1".into(),
            table: Name::new("public", hostile),
            to: Name::new("public", &format!("{hostile}_restored")),
            rows: 42,
            replace: true,
            guard: "DO $g$BEGIN NULL; END$g$;".into(),
        };
        let sql = sql(&m);
        let parsed = pg_query::parse(&sql, 0).expect("one DO statement");
        assert_eq!(parsed.protobuf.stmts.len(), 1);
        // The body is valid PL/pgSQL, and the hostile name appears only inside the JSON literal.
        let body = sql.split_once("\nDECLARE").unwrap().1;
        assert!(pg_query::parse_plpgsql(&format!(
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$DECLARE{}$f$",
            body.rsplit_once("END ").unwrap().0.to_string() + "END"
        ))
        .is_ok());
        // Outside the JSON literal (between its two tags), the hostile name appears nowhere.
        let tag = sql.split_once(":= ").unwrap().1.split('{').next().unwrap();
        let parts: Vec<&str> = sql.split(tag).collect();
        assert_eq!(parts.len(), 3, "the data tag opens and closes the literal once");
        let json: serde_json::Value = serde_json::from_str(parts[1]).unwrap();
        assert_eq!(json["table"], hostile);
        assert!(!format!("{}{}", parts[0], parts[2]).contains("DROP TABLE t"));
        if let Ok(path) = std::env::var("PGVIGIL_WRITE_EPILOGUE") {
            std::fs::write(path, &sql).unwrap();
        }
    }
}
