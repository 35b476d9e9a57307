-- A random key shared by every instance on this database. Cache invalidations broadcast over
-- LISTEN/NOTIFY name keys by a keyed hash under it, so no phone, e-mail or CPF travels in a
-- notification (nor lands in a server log that records pg_notify calls).
CREATE TABLE core.instance_secret (
    id integer PRIMARY KEY CHECK (id = 1),
    secret text NOT NULL
);
INSERT INTO core.instance_secret (id, secret)
VALUES (1, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
