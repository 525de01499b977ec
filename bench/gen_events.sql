-- The events data of the benchmark: :tables tables (`events` when 1, else events_0 …) sharing
-- :rows rows of realistic, hard-to-compress rows (hashes, random numbers, timestamps, jsonb),
-- each with two secondary indexes. Included by gen.sql and gen_spread.sql.
SELECT format($$CREATE TABLE IF NOT EXISTS %I (
  id bigserial PRIMARY KEY,
  user_id bigint NOT NULL,
  kind text NOT NULL,
  payload jsonb NOT NULL,
  hash text NOT NULL,
  amount numeric(12,2),
  created_at timestamptz NOT NULL
)$$, t) FROM (SELECT CASE WHEN :tables = 1 THEN 'events' ELSE 'events_' || k END AS t FROM generate_series(0, :tables - 1) AS k) AS n
\gexec
SELECT format($$INSERT INTO %I (user_id, kind, payload, hash, amount, created_at)
SELECT (random() * 1e6)::bigint,
       (ARRAY['click', 'view', 'purchase', 'signup', 'refund'])[1 + floor(random() * 5)::int],
       jsonb_build_object('ua', md5(random()::text), 'ip', (random() * 4e9)::bigint,
                          'tags', jsonb_build_array(md5(random()::text), (random() * 100)::int)),
       md5(random()::text) || md5(random()::text),
       (random() * 10000)::numeric(12,2),
       timestamptz '2026-01-01' + random() * interval '300 days'
FROM generate_series(1, %s)$$, t, (:rows / :tables)::bigint)
FROM (SELECT CASE WHEN :tables = 1 THEN 'events' ELSE 'events_' || k END AS t FROM generate_series(0, :tables - 1) AS k) AS n
\gexec
SELECT format('CREATE INDEX IF NOT EXISTS %I ON %I (user_id)', t || '_user', t),
       format('CREATE INDEX IF NOT EXISTS %I ON %I (created_at)', t || '_created', t)
FROM (SELECT CASE WHEN :tables = 1 THEN 'events' ELSE 'events_' || k END AS t FROM generate_series(0, :tables - 1) AS k) AS n
\gexec
