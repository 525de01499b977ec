-- Benchmark data spread over four tables of about the same size (BENCH_SHAPE=spread), plus the
-- same ~5 % invoices table: the shape where restoring over several sessions can pay off (with one
-- dominant table, as in gen.sql, a restore cannot finish before that table's COPY does).
-- Run with: psql -v rows=N -f bench/gen_spread.sql
\set tables 4
\ir gen_events.sql
\ir gen_invoices.sql
