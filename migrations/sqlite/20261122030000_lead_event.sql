-- The source-neutral lead event each intake builds at its edge, as tagged JSON text: the
-- worker reads only this. The raw payload beside it stays for audit and erasure. NULL on rows
-- written before this column (converted once at startup) and on rows whose personal data an
-- erasure or payload retention removed.
ALTER TABLE webhook_inbox ADD COLUMN lead_event TEXT;
