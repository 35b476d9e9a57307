-- Person data lives in schema `core`; the inbox is operational state and stays in `public`.
CREATE SCHEMA IF NOT EXISTS core;

-- One party per CPF: the person the providers told us about.
CREATE TABLE core.parties (
    id          BIGSERIAL PRIMARY KEY,
    cpf         TEXT NOT NULL UNIQUE,
    name        TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Canonical contacts of a party. source = 'lookup': a CPF lookup answered this contact with
-- this party (the lookup index); source = 'person': listed in the party's person data.
CREATE TABLE core.party_contacts (
    id          BIGSERIAL PRIMARY KEY,
    party_id    BIGINT NOT NULL REFERENCES core.parties(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('phone', 'whatsapp', 'email')),
    value       TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('lookup', 'person')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (kind, value, source, party_id)
);
CREATE INDEX party_contacts_lookup ON core.party_contacts (kind, value, source, created_at DESC);
CREATE INDEX party_contacts_party ON core.party_contacts (party_id);

-- Every person-data answer bought: the raw payload as received, and the normalized data the
-- message is rendered from.
CREATE TABLE core.party_enrichments (
    id          BIGSERIAL PRIMARY KEY,
    party_id    BIGINT NOT NULL REFERENCES core.parties(id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    raw         JSONB NOT NULL,
    data        JSONB NOT NULL,
    fetched_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX party_enrichments_latest ON core.party_enrichments (party_id, fetched_at DESC);

-- Which CRM lead was found to be which party, and through which contact kind.
CREATE TABLE core.lead_parties (
    source        TEXT NOT NULL,
    lead_id       TEXT NOT NULL,
    party_id      BIGINT NOT NULL REFERENCES core.parties(id) ON DELETE CASCADE,
    contact_kind  TEXT NOT NULL,
    linked_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, lead_id, party_id, contact_kind)
);
CREATE INDEX lead_parties_party ON core.lead_parties (party_id);

-- Answers that said "nobody", remembered until they expire so no instance pays for them again.
CREATE TABLE core.negative_lookups (
    kind        TEXT NOT NULL CHECK (kind IN ('phone', 'email', 'cpf')),
    value       TEXT NOT NULL,
    provider    TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);

-- Every accepted webhook event, written before the sender gets its 2xx.
CREATE TABLE webhook_inbox (
    id               BIGSERIAL PRIMARY KEY,
    source           TEXT NOT NULL,
    lead_id          TEXT NOT NULL,
    event_at         TIMESTAMPTZ NOT NULL,
    action           TEXT NOT NULL,
    payload          JSONB NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'processing', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    claim_token      UUID,
    lease_until      TIMESTAMPTZ,
    contact_set      TEXT,
    message          TEXT,
    send_started_at  TIMESTAMPTZ,
    delivered_at     TIMESTAMPTZ,
    outcome          TEXT,
    last_error       TEXT,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (source, lead_id, event_at)
);
CREATE INDEX webhook_inbox_due ON webhook_inbox (next_attempt_at, id)
    WHERE state IN ('pending', 'processing');
CREATE INDEX webhook_inbox_lead ON webhook_inbox (source, lead_id, event_at, id);
CREATE INDEX webhook_inbox_state ON webhook_inbox (state, id);
