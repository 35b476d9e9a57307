-- Warming reads the most recently enriched people page by page, newest first: with this index
-- each page walks only its own rows from where the last one stopped, instead of sorting
-- every enrichment again for every page.
CREATE INDEX party_enrichments_recent ON core.party_enrichments (fetched_at DESC, id DESC);
