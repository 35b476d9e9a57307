-- Same model as the Postgres schema. Instants are INTEGER microseconds since the Unix epoch
-- (UTC), so comparisons are numeric; JSON is TEXT.

CREATE TABLE parties (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cpf         TEXT NOT NULL UNIQUE,
    name        TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE party_contacts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    party_id    INTEGER NOT NULL REFERENCES parties(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('phone', 'whatsapp', 'email')),
    value       TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('lookup', 'person')),
    created_at  INTEGER NOT NULL,
    UNIQUE (kind, value, source, party_id)
);
CREATE INDEX party_contacts_lookup ON party_contacts (kind, value, source, created_at DESC);
CREATE INDEX party_contacts_party ON party_contacts (party_id);

CREATE TABLE party_enrichments (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    party_id    INTEGER NOT NULL REFERENCES parties(id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    raw         TEXT NOT NULL,
    data        TEXT NOT NULL,
    fetched_at  INTEGER NOT NULL
);
CREATE INDEX party_enrichments_latest ON party_enrichments (party_id, fetched_at DESC);

CREATE TABLE lead_parties (
    source        TEXT NOT NULL,
    lead_id       TEXT NOT NULL,
    party_id      INTEGER NOT NULL REFERENCES parties(id) ON DELETE CASCADE,
    contact_kind  TEXT NOT NULL,
    linked_at     INTEGER NOT NULL,
    PRIMARY KEY (source, lead_id, party_id, contact_kind)
);
CREATE INDEX lead_parties_party ON lead_parties (party_id);

CREATE TABLE negative_lookups (
    kind        TEXT NOT NULL CHECK (kind IN ('phone', 'email', 'cpf')),
    value       TEXT NOT NULL,
    provider    TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
);

CREATE TABLE webhook_inbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source           TEXT NOT NULL,
    lead_id          TEXT NOT NULL,
    event_at         INTEGER NOT NULL,
    action           TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'processing', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    claim_token      TEXT,
    lease_until      INTEGER,
    contact_set      TEXT,
    message          TEXT,
    send_started_at  INTEGER,
    delivered_at     INTEGER,
    outcome          TEXT,
    last_error       TEXT,
    received_at      INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (source, lead_id, event_at)
);
CREATE INDEX webhook_inbox_due ON webhook_inbox (state, next_attempt_at, id);
CREATE INDEX webhook_inbox_lead ON webhook_inbox (source, lead_id, event_at, id);
