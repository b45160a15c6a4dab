-- Commerce, first part: what a tenant sells (products and their prices), tax rates,
-- discount codes, customers and carts. Amounts are BIGINT minor units of the row's currency;
-- rates are stored as ten-thousandths of a percent (19 % is 190000), see src/commerce/money.rs.

CREATE TABLE products (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- 1: grants every playback id of the tenant, present and future.
    all_content  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX products_by_tenant ON products (tenant_id, id);

-- The playback ids a product grants (none when all_content).
CREATE TABLE product_playback_ids (
    product_id   TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    playback_id  TEXT NOT NULL,
    PRIMARY KEY (product_id, playback_id)
);

CREATE TABLE prices (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    product_id    TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    type          TEXT NOT NULL CHECK (type IN ('one_time', 'rental', 'recurring')),
    unit_amount   BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    tax_behavior  TEXT NOT NULL CHECK (tax_behavior IN ('inclusive', 'exclusive')),
    -- Rentals: hours of access, counted from the purchase or from the first play.
    rental_hours  BIGINT,
    rental_starts TEXT CHECK (rental_starts IN ('purchase', 'first_play')),
    -- Subscriptions: month or year, and free days first.
    billing_interval TEXT CHECK (billing_interval IN ('month', 'year')),
    trial_days    BIGINT,
    -- The token's max_resolution this price buys ('' for no limit).
    tier          TEXT NOT NULL,
    active        BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX prices_by_tenant ON prices (tenant_id, id);
CREATE INDEX prices_by_product ON prices (product_id);

CREATE TABLE tax_rates (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- ISO 3166-1 alpha-2, upper case; region '' is the whole country.
    country      TEXT NOT NULL,
    region       TEXT NOT NULL,
    rate         BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, country, region)
);

CREATE TABLE discount_codes (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Upper case; unique per tenant.
    code             TEXT NOT NULL,
    percent_off      BIGINT,
    amount_off       BIGINT,
    currency         TEXT,
    starts_at        BIGINT,
    ends_at          BIGINT,
    max_redemptions  BIGINT,
    max_per_customer BIGINT,
    min_subtotal     BIGINT,
    -- Paid orders that used it.
    redemptions      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (tenant_id, code)
);

-- The products a code applies to (none: every product).
CREATE TABLE discount_code_products (
    code_id      TEXT NOT NULL REFERENCES discount_codes (id) ON DELETE CASCADE,
    product_id   TEXT NOT NULL,
    PRIMARY KEY (code_id, product_id)
);

CREATE TABLE customers (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email        TEXT,
    name         TEXT,
    country      TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX customers_by_tenant ON customers (tenant_id, id);

CREATE TABLE carts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    currency         TEXT NOT NULL,
    customer_id      TEXT,
    country          TEXT,
    region           TEXT,
    discount_code_id TEXT,
    status           TEXT NOT NULL CHECK (status IN ('open', 'checked_out')),
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX carts_by_tenant ON carts (tenant_id, id);

CREATE TABLE cart_items (
    cart_id      TEXT NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    price_id     TEXT NOT NULL,
    quantity     BIGINT NOT NULL,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (cart_id, price_id)
);
