-- One row per source lead the CRM is asked to create (a Google Ads lead id): the intent is
-- recorded before each create call, the CRM's lead id once it answered. `calls` counts the
-- calls started; a call that left no id counts against the unknown-outcome allowance. No
-- personal data: ids and counts only. Instants in microseconds (UTC).
CREATE TABLE crm_creations (
    source       TEXT NOT NULL,
    source_lead  TEXT NOT NULL,
    calls        INTEGER NOT NULL,
    claimed_at   INTEGER NOT NULL,
    crm_lead_id  TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (source, source_lead)
);
