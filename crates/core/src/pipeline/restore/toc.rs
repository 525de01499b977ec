//! Partial restores cannot pass: before a restore's `COMMIT`, inside its transaction, every
//! table, index, constraint, sequence, view, materialized view, function, procedure, trigger and
//! policy that the dump's table of contents lists (recorded in the manifest at backup time) must
//! exist, or the transaction fails with [`MISSING`] naming what is missing, and nothing is
//! committed.
//!
//! Names are compared as pg_dump writes them in its headers: `table constraint` for constraints,
//! triggers and policies, `name(argument types)` for functions, types formatted with an empty
//! `search_path` (as pg_dump's own session has it), line breaks turned into spaces.

use crate::records::manifest::TocEntry;

/// The SQLSTATE the guard raises when objects are missing (a class of pgvigil's own).
pub const MISSING: &str = "PV001";

/// Every object of the kinds pg_dump lists, named as its headers name them.
const PRESENT: &str = r"
SELECT CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'f' THEN 'FOREIGN TABLE'
         WHEN 'i' THEN 'INDEX' WHEN 'I' THEN 'INDEX' WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
         WHEN 'm' THEN 'MATERIALIZED VIEW' END, n.nspname::text, c.relname::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT k.kind, n.nspname::text, c.relname || ' ' || con.conname
  FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, (VALUES ('CONSTRAINT'), ('FK CONSTRAINT')) AS k(kind)
UNION ALL
SELECT 'TRIGGER', n.nspname::text, c.relname || ' ' || t.tgname
  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal
UNION ALL
SELECT 'POLICY', n.nspname::text, c.relname || ' ' || p.polname
  FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, n.nspname::text,
       p.proname || '(' || coalesce((SELECT pg_catalog.string_agg(pg_catalog.format_type(a.t, NULL), ', ' ORDER BY a.o)
                                     FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) WITH ORDINALITY AS a(t, o)), '') || ')'
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p', 'w')
";

/// A dollar-quote tag that `text` does not contain.
pub(crate) fn tag_for(text: &str) -> String {
    loop {
        let tag = format!("$pgvigil_{:016x}$", rand::random::<u64>());
        if !text.contains(&tag) {
            return tag;
        }
    }
}

/// The statement that fails the transaction with [`MISSING`] when an object of `toc` does not
/// exist; `None` when the manifest lists none (a backup taken before pgvigil recorded them).
pub fn guard_sql(toc: &[TocEntry]) -> Option<String> {
    guard_raising(toc, MISSING, None)
}

/// [`guard_sql`], raising `code` instead of [`MISSING`], and looking only in schema `within`
/// when given (a name of letters, digits and `_`; else `None`).
pub fn guard_raising(toc: &[TocEntry], code: &str, within: Option<&str>) -> Option<String> {
    if within.is_some_and(|w| w.is_empty() || !w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')) {
        return None;
    }
    let within = within.map_or(String::new(), |w| format!(" WHERE o.schema = '{w}'"));
    if toc.is_empty() {
        return None;
    }
    let json = serde_json::to_string(toc).ok()?;
    let data = tag_for(&json);
    let body = tag_for(&format!("{json}{data}"));
    Some(format!(
        "DO {body}
DECLARE
  missing pg_catalog.text[];
BEGIN
  PERFORM pg_catalog.set_config('search_path', '', true);
  SELECT pg_catalog.array_agg(m.kind || ' ' || m.schema || '.' || m.name ORDER BY m.kind, m.schema, m.name) INTO missing
    FROM (SELECT e.kind, e.schema, pg_catalog.translate(e.name, E'\\n\\r', '  ') AS name
            FROM pg_catalog.jsonb_to_recordset({data}{json}{data}::pg_catalog.jsonb) AS e(kind pg_catalog.text, schema pg_catalog.text, name pg_catalog.text)
          EXCEPT
          SELECT o.kind, o.schema, pg_catalog.translate(o.name, E'\\n\\r', '  ') FROM ({PRESENT}) AS o(kind, schema, name){within}) AS m;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = pg_catalog.format(
      '%s object(s) of the dump''s table of contents are missing after the restore: %s',
      pg_catalog.cardinality(missing), pg_catalog.array_to_string(missing[1:10], ', '));
  END IF;
END {body};
"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_quotes_what_it_embeds_safely() {
        assert_eq!(guard_sql(&[]), None);
        let evil = TocEntry {
            kind: "TABLE".into(),
            schema: "public".into(),
            name: "$pgvigil_0000000000000000$'; COMMIT; --".into(),
        };
        let sql = guard_sql(&[evil]).unwrap();
        let body_tag = sql.split_whitespace().nth(1).unwrap();
        assert!(body_tag.starts_with("$pgvigil_") && body_tag.ends_with('$'));
        assert_eq!(sql.matches(body_tag).count(), 2, "the body's tag appears only around the body");
        let parsed = pg_query::parse(&sql, 0).unwrap();
        assert_eq!(parsed.protobuf.stmts.len(), 1, "one DO statement, whatever the names hold");
    }
}
