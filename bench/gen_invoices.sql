-- A table holding about 5 % of the data, for `pgvigil restore --table` (one table back).
CREATE TABLE IF NOT EXISTS invoices (
  id bigserial PRIMARY KEY,
  customer bigint NOT NULL,
  hash text NOT NULL,
  amount numeric(12,2),
  issued_at timestamptz NOT NULL
);
INSERT INTO invoices (customer, hash, amount, issued_at)
SELECT (random() * 1e6)::bigint,
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text),
       (random() * 10000)::numeric(12,2),
       timestamptz '2026-01-01' + random() * interval '300 days'
FROM generate_series(1, (:rows / 20)::bigint);
CREATE INDEX IF NOT EXISTS invoices_customer ON invoices (customer);
