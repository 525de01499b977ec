-- Checks run by the verify service against every restored backup (see VERIFY_QUERIES_FILE).
-- Each must return one row whose first value is true (or non-zero).
SELECT count(*) > 0 FROM customers;
SELECT count(*) FROM orders WHERE customer_id IS NOT NULL;
SELECT NOT EXISTS (SELECT 1 FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL);
