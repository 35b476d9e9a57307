-- The inbox is a queue: every event is written three or four times (stored, claimed, message
-- and sending mark, finished). Free room on each page lets the writes that change no indexed
-- column stay on their page (HOT: no new index entries), and vacuuming after 2 % of the rows
-- changed instead of 20 % keeps few dead versions in the claim's index, however many done
-- events the table holds: with the defaults, a table of a million done events collects
-- 200 000 dead versions before autovacuum visits it, and every claim walks past them.
ALTER TABLE webhook_inbox SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
