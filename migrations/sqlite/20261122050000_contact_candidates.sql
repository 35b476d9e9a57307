-- Every candidate a contact lookup listed, in the provider's order: see the Postgres
-- migration of the same name. Instants are INTEGER microseconds since the Unix epoch.
CREATE TABLE contact_candidates (
    kind        TEXT NOT NULL CHECK (kind IN ('phone', 'email')),
    value       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    cpf         TEXT,
    cnpj        TEXT,
    name        TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, value, position),
    CHECK ((cpf IS NULL) <> (cnpj IS NULL))
);
CREATE INDEX contact_candidates_cpf ON contact_candidates (cpf) WHERE cpf IS NOT NULL;
