-- Demo data for docker compose: a few tables so the first backup has something to prove.
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers(id), amount numeric(10,2), details jsonb);
INSERT INTO customers (name, email) SELECT 'customer ' || i, md5(i::text) || '@example.com' FROM generate_series(1, 5000) i;
INSERT INTO orders (customer_id, amount, details)
  SELECT (i % 5000) + 1, (i % 997) * 1.5, jsonb_build_object('sku', md5(i::text), 'qty', i % 7)
  FROM generate_series(1, 20000) i;
