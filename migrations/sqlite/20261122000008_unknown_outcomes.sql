-- How many times a message POST of this event was sent without an answer (a timeout after
-- sending, or a process that stopped mid-POST). Bounds the copies a slow CRM can receive:
-- past `delivery.unknown_outcome_reposts` the event is dead-lettered instead of posted again.
ALTER TABLE webhook_inbox ADD COLUMN unknown_outcomes INTEGER NOT NULL DEFAULT 0;
