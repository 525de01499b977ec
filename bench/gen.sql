-- Benchmark data: one `events` table holding about 95 % of the rows, and `invoices` (about 5 %).
-- Run with: psql -v rows=N -f bench/gen.sql
\set tables 1
\ir gen_events.sql
\ir gen_invoices.sql
