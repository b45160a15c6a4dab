-- A tenant's look on its player and embed pages, and how its viewers buy there. Colours are
-- #rrggbb; the custom CSS is kept as sanitised (src/api/safe_css.rs), never as sent. The
-- publishable key is public by design (it is served in the pages): it lets the page's buy
-- button open a checkout with the public API.
CREATE TABLE tenant_branding (
    tenant_id          TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    name               TEXT,
    background         TEXT,
    text_color         TEXT,
    accent             TEXT,
    logo_url           TEXT,
    custom_css         TEXT NOT NULL,
    publishable_key    TEXT,
    checkout_provider  TEXT,
    updated_at         BIGINT NOT NULL
);
