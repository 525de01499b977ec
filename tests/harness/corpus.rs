//! A schema corpus that looks like real databases rather than a tidy sample: declarative
//! partitioning (range, list, hash, default partition, partitioned primary key and indexes), enum
//! and domain types, identity and generated columns, contrib extensions (citext, hstore,
//! pg_trgm), GIN, GiST, BRIN and hash indexes, a materialized view, triggers, row-level security
//! with FORCE, an unlogged table, large objects, comments, several schemas, non-ASCII identifiers,
//! procedure bodies that say `BEGIN` and `COMMIT`, SQL-standard bodies (`BEGIN ATOMIC … END`) and
//! a view whose expression nests 200 operators deep, a publication and a subscription.

use crate::PgServer;

/// Rows in the table under `FORCE ROW LEVEL SECURITY`; its policy shows a third of them.
pub const SECURED_ROWS: u64 = 900;

/// The corpus, as SQL run by a superuser in an empty database.
pub const SQL: &str = r#"
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE EXTENSION pg_trgm;
CREATE SCHEMA billing;
CREATE SCHEMA "Ünïcødé Schema";
COMMENT ON SCHEMA billing IS 'money; with a semicolon and a ''quote''';

CREATE TYPE billing.status AS ENUM ('open', 'paid', 'void');
CREATE DOMAIN billing.positive AS numeric CHECK (VALUE > 0);

-- Range partitioning with a default partition, a partitioned primary key and index.
CREATE TABLE billing.events (
  id bigint GENERATED ALWAYS AS IDENTITY,
  at date NOT NULL,
  status billing.status NOT NULL DEFAULT 'open',
  amount billing.positive,
  doubled numeric GENERATED ALWAYS AS (amount * 2) STORED,
  attrs hstore,
  email citext,
  PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE billing.events_2025 PARTITION OF billing.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE billing.events_2026 PARTITION OF billing.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE billing.events_other PARTITION OF billing.events DEFAULT;
CREATE INDEX events_status ON billing.events (status);
CREATE INDEX events_email_trgm ON billing.events USING gin (email gin_trgm_ops);
INSERT INTO billing.events (at, status, amount, attrs, email)
  SELECT date '2024-06-01' + (i % 1000), (ARRAY['open','paid','void']::billing.status[])[1 + i % 3], 1 + i % 50,
         hstore('k', i::text), 'User' || i || '@Example.com'
  FROM generate_series(1, 3000) AS i;

-- List and hash partitioning.
CREATE TABLE public.regions (code text, name text, PRIMARY KEY (code)) PARTITION BY LIST (code);
CREATE TABLE public.regions_eu PARTITION OF public.regions FOR VALUES IN ('de', 'fr', 'nl');
CREATE TABLE public.regions_rest PARTITION OF public.regions DEFAULT;
INSERT INTO public.regions VALUES ('de', 'Deutschland'), ('fr', 'France'), ('us', 'United States'), ('jp', '日本');
CREATE TABLE public.sessions (id uuid PRIMARY KEY, data jsonb) PARTITION BY HASH (id);
CREATE TABLE public.sessions_0 PARTITION OF public.sessions FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.sessions_1 PARTITION OF public.sessions FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO public.sessions SELECT md5(i::text)::uuid, jsonb_build_object('i', i) FROM generate_series(1, 500) AS i;
CREATE INDEX sessions_data ON public.sessions USING gin (data);
-- Hash partitioning on an enum: pg_dump loads these partitions through their root.
CREATE TABLE billing.by_status (id int, status billing.status NOT NULL) PARTITION BY HASH (status);
CREATE TABLE billing.by_status_0 PARTITION OF billing.by_status FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE billing.by_status_1 PARTITION OF billing.by_status FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO billing.by_status SELECT i, (ARRAY['open','paid','void']::billing.status[])[1 + i % 3] FROM generate_series(1, 300) AS i;
-- The same one level down: the enum-hash partitions of 2025 load through the top root, ledger,
-- while the plain partition of 2026 loads on its own.
CREATE TABLE billing.ledger (at date NOT NULL, status billing.status NOT NULL, amount int) PARTITION BY RANGE (at);
CREATE TABLE billing.ledger_2025 PARTITION OF billing.ledger FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY HASH (status);
CREATE TABLE billing.ledger_2025_0 PARTITION OF billing.ledger_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE billing.ledger_2025_1 PARTITION OF billing.ledger_2025 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE billing.ledger_2026 PARTITION OF billing.ledger FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO billing.ledger SELECT date '2025-01-01' + (i % 600), (ARRAY['open','paid','void']::billing.status[])[1 + i % 3], i FROM generate_series(1, 400) AS i;

-- GiST, BRIN and hash indexes; an unlogged table.
CREATE TABLE public.places (id int PRIMARY KEY, area box, seen timestamptz, tag text);
INSERT INTO public.places SELECT i, box(point(i, i), point(i + 1, i + 1)), timestamptz '2026-01-01' + i * interval '1 hour', 'tag' || (i % 7)
  FROM generate_series(1, 2000) AS i;
CREATE INDEX places_area ON public.places USING gist (area);
CREATE INDEX places_seen ON public.places USING brin (seen);
CREATE INDEX places_tag ON public.places USING hash (tag);
CREATE UNLOGGED TABLE public.cache (k text PRIMARY KEY, v text);
INSERT INTO public.cache SELECT 'k' || i, repeat('v', i % 10) FROM generate_series(1, 100) AS i;

-- Row-level security with FORCE: even the table's owner sees only the current tenant's rows.
CREATE TABLE public.secured (id int PRIMARY KEY, tenant int NOT NULL, secret text);
INSERT INTO public.secured SELECT i, i % 3, md5(i::text) FROM generate_series(1, 900) AS i;
ALTER TABLE public.secured ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.secured FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_only ON public.secured USING (tenant = coalesce(nullif(current_setting('app.tenant', true), '')::int, 0));

-- Non-ASCII identifiers, comments, a materialized view, triggers.
CREATE TABLE "Ünïcødé Schema"."Größe ""quoted"" täble" ("Schlüssel" int PRIMARY KEY, "Wert" text);
INSERT INTO "Ünïcødé Schema"."Größe ""quoted"" täble" SELECT i, 'ü' || i FROM generate_series(1, 50) AS i;
COMMENT ON TABLE "Ünïcødé Schema"."Größe ""quoted"" täble" IS E'a comment with a line break\nCOMMIT;\nand a fake COMMIT';
CREATE MATERIALIZED VIEW billing.totals AS SELECT status, count(*) AS n, sum(amount) AS total FROM billing.events GROUP BY status;
CREATE TABLE public.audit (at timestamptz DEFAULT now(), what text);
CREATE FUNCTION public.audit_places() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
INSERT INTO public.audit (what) VALUES (TG_OP || ' ' || NEW.id);
RETURN NEW;
END
$$;
CREATE TRIGGER places_audit AFTER INSERT OR UPDATE ON public.places FOR EACH ROW EXECUTE FUNCTION public.audit_places();
UPDATE public.places SET tag = tag WHERE id <= 10;

-- Bodies that say BEGIN; and COMMIT; on lines of their own.
CREATE PROCEDURE billing.close_day() LANGUAGE plpgsql AS $_$
BEGIN
UPDATE billing.events SET status = 'paid' WHERE status = 'open' AND at < current_date - 365;
COMMIT;
END
$_$;
CREATE FUNCTION billing.note() RETURNS text LANGUAGE sql AS $body$
SELECT 'BEGIN;
COMMIT;
'::text
$body$;

-- SQL-standard bodies: psql reads BEGIN ATOMIC … END as one statement, and so does pgvigil.
CREATE FUNCTION billing.double_it(x integer) RETURNS integer LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
  SELECT x * 2;
END;
CREATE PROCEDURE billing.touch() LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 ELSE 2 END; SELECT 2; END;

-- Large objects (pg_dump wraps their data in BEGIN; ... COMMIT;).
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8'));
SELECT lo_from_bytea(0, '\x00010203'::bytea);

-- Logical replication: a publication, and a subscription (never connected) with a comment. A
-- restore leaves the subscription out: one in a scratch database would keep it from being dropped.
CREATE PUBLICATION corpus_pub FOR TABLE public.regions_eu;
CREATE SUBSCRIPTION corpus_sub CONNECTION 'host=127.0.0.1 port=9 dbname=nowhere' PUBLICATION elsewhere
  WITH (connect = false, enabled = false, slot_name = NONE);
COMMENT ON SUBSCRIPTION corpus_sub IS 'pulls from a server that does not exist';
"#;

/// A view whose expression is 200 operators deep: a parse tree deeper than a default protobuf
/// decoder accepts, which a restore must still read.
fn deep_view() -> String {
    let terms: Vec<String> = (0..200).map(|i| format!("'{i}'")).collect();
    format!("CREATE VIEW public.long_label AS SELECT {} AS label;", terms.join(" || "))
}

/// Creates `db` and fills it with the corpus.
pub async fn build(pg: &PgServer, db: &str) {
    pg.create_db(db).await;
    pg.exec(db, SQL).await;
    pg.exec(db, &deep_view()).await;
}
