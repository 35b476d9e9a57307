-- How far the CRM's list of updated leads was read by reconciliation, per source (`c2s`):
-- the next pass starts there (less an overlap) instead of looking back a fixed window.
CREATE TABLE core.watermarks (
    name text PRIMARY KEY,
    at   timestamptz NOT NULL
);
