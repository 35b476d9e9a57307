-- One row per erasure (data-protection right to erasure): when, through which action, for
-- which hashed CPF, and how many rows of each table went. Never personal data.
CREATE TABLE core.erasure_audit (
    id        BIGSERIAL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    action    TEXT NOT NULL,
    cpf_hash  TEXT NOT NULL,
    counts    JSONB NOT NULL
);
CREATE INDEX erasure_audit_at ON core.erasure_audit (at DESC, id DESC);
