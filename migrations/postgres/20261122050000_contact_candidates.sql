-- Every candidate a contact lookup listed, in the provider's order: people (CPF and the name
-- the lookup gave) and companies (CNPJ), so the choice among them can be made per lead, by
-- name, from the database as from memory. Only the latest lookup of a contact is kept. A
-- contact looked up before this table reads as a list of its one lookup party.
CREATE TABLE core.contact_candidates (
    kind        TEXT NOT NULL CHECK (kind IN ('phone', 'email')),
    value       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    cpf         TEXT,
    cnpj        TEXT,
    name        TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, value, position),
    CHECK ((cpf IS NULL) <> (cnpj IS NULL))
);
-- Erasure finds a person's rows by CPF.
CREATE INDEX contact_candidates_cpf ON core.contact_candidates (cpf) WHERE cpf IS NOT NULL;
