-- Commerce, second part: a tenant's payment provider settings (secrets sealed under the
-- master key's KEK, like content keys), orders frozen at checkout with their lines, the
-- inbox of provider webhook events (each processed once by event id), and entitlements that
-- come from an order.

CREATE TABLE payment_providers (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider        TEXT NOT NULL CHECK (provider IN ('stripe', 'paypal', 'coinbase')),
    base_url        TEXT NOT NULL,
    kek_id          TEXT NOT NULL,
    -- Sealed (src/drm/content_keys.rs KeyWrapper::seal), bound to tenant and provider.
    secret_key      TEXT NOT NULL,
    webhook_secret  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);

CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    cart_id          TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    currency         TEXT NOT NULL,
    country          TEXT,
    region           TEXT,
    discount_code_id TEXT,
    subtotal         BIGINT NOT NULL,
    discount         BIGINT NOT NULL,
    tax              BIGINT NOT NULL,
    total            BIGINT NOT NULL,
    -- 'payment' or 'subscription', as Stripe Checkout's mode.
    mode             TEXT NOT NULL,
    provider         TEXT NOT NULL,
    -- The provider's checkout (Stripe Checkout Session id) and payment (PaymentIntent id).
    provider_session TEXT,
    payment_ref      TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'failed', 'canceled', 'refunded')),
    -- Refunded so far (minor units), as the provider counts it.
    refunded         BIGINT NOT NULL,
    disputed         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    paid_at          BIGINT,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX orders_by_tenant ON orders (tenant_id, id);
CREATE INDEX orders_by_customer ON orders (tenant_id, customer_id);

-- What was bought, frozen: a refund reverses these amounts and never prices again.
CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          BIGINT NOT NULL,
    price_id         TEXT NOT NULL,
    product_id       TEXT NOT NULL,
    product_name     TEXT NOT NULL,
    type             TEXT NOT NULL,
    quantity         BIGINT NOT NULL,
    unit_amount      BIGINT NOT NULL,
    subtotal         BIGINT NOT NULL,
    discount         BIGINT NOT NULL,
    tax              BIGINT NOT NULL,
    total            BIGINT NOT NULL,
    tax_rate         BIGINT NOT NULL,
    tax_behavior     TEXT NOT NULL,
    rental_hours     BIGINT,
    rental_starts    TEXT,
    billing_interval TEXT,
    trial_days       BIGINT,
    tier             TEXT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- Every webhook delivery, raw, with its verification result. A verified event id is stored
-- once per tenant and provider; it is processed by whoever claims it first.
CREATE TABLE webhook_events (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    event_id      TEXT,
    type          TEXT,
    body          TEXT NOT NULL,
    verified      BIGINT NOT NULL,
    -- Why verification failed.
    error         TEXT,
    received_at   BIGINT NOT NULL,
    claimed_at    BIGINT,
    processed_at  BIGINT,
    -- What processing did, in words.
    result        TEXT
);
CREATE UNIQUE INDEX webhook_events_once ON webhook_events (tenant_id, provider, event_id) WHERE verified = 1;
CREATE INDEX webhook_events_by_tenant ON webhook_events (tenant_id, id);

ALTER TABLE entitlements ADD COLUMN order_id TEXT;
CREATE INDEX entitlements_by_order ON entitlements (order_id);
-- A rental counted from the first play: its length, until the first key request starts it
-- (expires_at is then set, and this cleared).
ALTER TABLE entitlements ADD COLUMN play_window_ms BIGINT;

-- A subscription bought by an order: the provider's (Stripe's sub_…), its status as the
-- provider last said, and the end of the period paid for. Its order's entitlements last
-- until that end plus commerce.subscription_grace_s.
CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    order_id             TEXT NOT NULL,
    customer_id          TEXT NOT NULL,
    provider             TEXT NOT NULL,
    provider_ref         TEXT NOT NULL,
    -- The provider's: trialing, active, past_due, canceled, unpaid, …
    status               TEXT NOT NULL,
    current_period_end   BIGINT,
    cancel_at_period_end BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    UNIQUE (tenant_id, provider, provider_ref)
);
CREATE INDEX subscriptions_by_order ON subscriptions (order_id);

-- Publishable keys (fcp_…): a tenant's key for viewers' browsers, good only for carts and
-- checkout. Only the SHA-256 of the secret is kept, as for API keys.
CREATE TABLE publishable_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix       TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX publishable_keys_by_tenant ON publishable_keys (tenant_id, id);

-- Invoices and credit notes, immutable once issued, numbered per tenant and kind without
-- gaps: the counter moves in the transaction that stores the document.
CREATE TABLE invoice_counters (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    last       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);

CREATE TABLE invoices (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    number         TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    customer_email TEXT,
    country        TEXT,
    currency       TEXT NOT NULL,
    -- JSON: the lines as issued.
    lines          TEXT NOT NULL,
    subtotal       BIGINT NOT NULL,
    discount       BIGINT NOT NULL,
    tax            BIGINT NOT NULL,
    total          BIGINT NOT NULL,
    -- Credit notes: the order's refunded total this one brings its credits to; 0 for invoices.
    covers         BIGINT NOT NULL,
    issued_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, kind, number),
    UNIQUE (order_id, kind, covers)
);
CREATE INDEX invoices_by_tenant ON invoices (tenant_id, id);
