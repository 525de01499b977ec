//! A sample database with mixed types, several schemas, indexes, views, functions and sequences,
//! and helpers that compare two databases table by table.

use crate::PgServer;
use sqlx::Connection;
use std::collections::BTreeMap;

/// Creates `db` and fills it; `rows` customers and twice as many orders.
pub async fn build(pg: &PgServer, db: &str, rows: u64) {
    pg.create_db(db).await;
    let sql = format!(
        r#"
CREATE SCHEMA sales;
CREATE SCHEMA "Mixed Case";
CREATE TABLE public.customers (
  id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE, balance numeric(12,2),
  tags text[], profile jsonb, avatar bytea, created_at timestamptz DEFAULT now());
CREATE TABLE sales.orders (
  id serial PRIMARY KEY, customer_id bigint REFERENCES public.customers(id), amount numeric,
  note text, placed_at timestamptz);
CREATE TABLE "Mixed Case"."Odd ""Name"" Table" (k int PRIMARY KEY, v text);
CREATE TABLE public.empty_table (x int);
CREATE INDEX orders_placed_at ON sales.orders (placed_at);
CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE amount > 100;
CREATE FUNCTION public.total_for(c bigint) RETURNS numeric LANGUAGE sql AS $$
  SELECT coalesce(sum(amount), 0) FROM sales.orders WHERE customer_id = c $$;
CREATE SEQUENCE public.invoice_seq START 1000;
SELECT setval('public.invoice_seq', 1234);
INSERT INTO public.customers (name, email, balance, tags, profile, avatar, created_at)
  SELECT 'customer ' || i, md5(i::text) || '@example.com', (i * 1.37)::numeric(12,2),
         ARRAY['tag' || (i % 5), E'tab\there\nnewline'], jsonb_build_object('i', i, 'hash', md5(i::text), 'nested', jsonb_build_array(i, 'x')),
         decode(md5(i::text), 'hex'), timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute'
  FROM generate_series(1, {rows}) AS i;
INSERT INTO sales.orders (customer_id, amount, note, placed_at)
  SELECT (i % {rows}) + 1, (i * 3.3)::numeric, md5(i::text) || md5((i * 7)::text), timestamptz '2026-02-01 00:00:00+00' + i * interval '1 second'
  FROM generate_series(1, {rows} * 2) AS i;
INSERT INTO "Mixed Case"."Odd ""Name"" Table" VALUES (1, E'back\\slash'), (2, 'ünïcødé ✓'), (3, NULL), (4, '\.');
"#
    );
    pg.exec(db, &sql).await;
}

/// (schema, table) of every user table.
async fn user_tables(c: &mut sqlx::PgConnection) -> Vec<(String, String)> {
    sqlx::query_as("SELECT schemaname::text, tablename::text FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2")
        .fetch_all(c)
        .await
        .unwrap()
}

/// Exact row count of every user table, keyed `schema.table` (unquoted names).
pub async fn row_counts(pg: &PgServer, db: &str) -> BTreeMap<String, u64> {
    let mut c = pg.connect(db).await;
    let tables = user_tables(&mut c).await;
    let mut out = BTreeMap::new();
    for (s, t) in tables {
        let q = format!("SELECT count(*) FROM \"{}\".\"{}\"", s.replace('"', "\"\""), t.replace('"', "\"\""));
        let n: i64 = sqlx::query_scalar(&q).fetch_one(&mut c).await.unwrap();
        out.insert(format!("{s}.{t}"), n as u64);
    }
    c.close().await.unwrap();
    out
}

/// md5 of every table's content in a stable order, keyed like [`row_counts`].
pub async fn checksums(pg: &PgServer, db: &str) -> BTreeMap<String, String> {
    let mut c = pg.connect(db).await;
    let tables = user_tables(&mut c).await;
    let mut out = BTreeMap::new();
    for (s, t) in tables {
        let q = format!(
            "SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM \"{}\".\"{}\" x",
            s.replace('"', "\"\""),
            t.replace('"', "\"\"")
        );
        let sum: String = sqlx::query_scalar(&q).fetch_one(&mut c).await.unwrap();
        out.insert(format!("{s}.{t}"), sum);
    }
    c.close().await.unwrap();
    out
}

/// Checks that non-table objects came back: view, function, sequence value.
pub async fn objects_ok(pg: &PgServer, db: &str) -> bool {
    let mut c = pg.connect(db).await;
    let seq: i64 = sqlx::query_scalar("SELECT last_value FROM public.invoice_seq")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let view: i64 = sqlx::query_scalar("SELECT count(*) FROM sales.big_orders")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let func: String = sqlx::query_scalar("SELECT public.total_for(1)::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    seq == 1234 && view > 0 && !func.is_empty()
}
