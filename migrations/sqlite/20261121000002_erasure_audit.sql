-- Same as the Postgres table: `at` is INTEGER microseconds (UTC), `counts` is JSON TEXT.
CREATE TABLE erasure_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    action    TEXT NOT NULL,
    cpf_hash  TEXT NOT NULL,
    counts    TEXT NOT NULL
);
CREATE INDEX erasure_audit_at ON erasure_audit (at DESC, id DESC);
