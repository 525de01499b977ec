-- Benchmark data spread over four tables of about the same size (BENCH_SHAPE=spread), plus the
-- same ~5 % invoices table: the shape where restoring over several sessions can pay off (with one
-- dominant table, as in gen.sql, a restore cannot finish before that table's COPY does).
-- Run with: psql -v rows=N -f bench/gen_spread.sql
SELECT format($$CREATE TABLE IF NOT EXISTS events_%s (
  id bigserial PRIMARY KEY,
  user_id bigint NOT NULL,
  kind text NOT NULL,
  payload jsonb NOT NULL,
  hash text NOT NULL,
  amount numeric(12,2),
  created_at timestamptz NOT NULL
)$$, k) FROM generate_series(0, 3) AS k
\gexec
SELECT format($$INSERT INTO events_%s (user_id, kind, payload, hash, amount, created_at)
SELECT (random() * 1e6)::bigint,
       (ARRAY['click', 'view', 'purchase', 'signup', 'refund'])[1 + floor(random() * 5)::int],
       jsonb_build_object('ua', md5(random()::text), 'ip', (random() * 4e9)::bigint,
                          'tags', jsonb_build_array(md5(random()::text), (random() * 100)::int)),
       md5(random()::text) || md5(random()::text),
       (random() * 10000)::numeric(12,2),
       timestamptz '2026-01-01' + random() * interval '300 days'
FROM generate_series(1, %s)$$, k, (:rows / 4)::bigint) FROM generate_series(0, 3) AS k
\gexec
SELECT format('CREATE INDEX IF NOT EXISTS events_%s_user ON events_%s (user_id)', k, k) FROM generate_series(0, 3) AS k
\gexec
SELECT format('CREATE INDEX IF NOT EXISTS events_%s_created ON events_%s (created_at)', k, k) FROM generate_series(0, 3) AS k
\gexec
\ir gen_invoices.sql
