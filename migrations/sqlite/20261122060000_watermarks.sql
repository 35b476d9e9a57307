-- How far the CRM's list of updated leads was read by reconciliation, per source (`c2s`):
-- the next pass starts there (less an overlap) instead of looking back a fixed window.
-- `at` in microseconds since the epoch (UTC), like every instant of this schema.
CREATE TABLE watermarks (
    name TEXT PRIMARY KEY,
    at   INTEGER NOT NULL
);
