-- Benchmark data: realistic, hard-to-compress rows (hashes, random numbers, timestamps, jsonb)
-- plus indexes. Run with: psql -v rows=N -f bench/gen.sql
CREATE TABLE IF NOT EXISTS events (
  id bigserial PRIMARY KEY,
  user_id bigint NOT NULL,
  kind text NOT NULL,
  payload jsonb NOT NULL,
  hash text NOT NULL,
  amount numeric(12,2),
  created_at timestamptz NOT NULL
);
INSERT INTO events (user_id, kind, payload, hash, amount, created_at)
SELECT (random() * 1e6)::bigint,
       (ARRAY['click', 'view', 'purchase', 'signup', 'refund'])[1 + floor(random() * 5)::int],
       jsonb_build_object('ua', md5(random()::text), 'ip', (random() * 4e9)::bigint,
                          'tags', jsonb_build_array(md5(random()::text), (random() * 100)::int)),
       md5(random()::text) || md5(random()::text),
       (random() * 10000)::numeric(12,2),
       timestamptz '2026-01-01' + random() * interval '300 days'
FROM generate_series(1, :rows);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id);
CREATE INDEX IF NOT EXISTS events_created ON events (created_at);
\ir gen_invoices.sql
