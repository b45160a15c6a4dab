-- Subscription periods paid, and the index that counts a discount code's uses.
--
-- Each period of a subscription paid at its provider (Stripe's invoice.paid with a charge):
-- what a refund or dispute of that period's charge names (its payment intent), the period's
-- own invoice (period 0 is the order's first charge, invoiced with the order; renewals are
-- 1, 2, …), and revenue. `refunded` is that charge's refunded total, as the provider counts.
CREATE TABLE subscription_payments (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider     TEXT NOT NULL,
    payment_ref  TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    invoice_ref  TEXT,
    period       BIGINT NOT NULL,
    amount       BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    refunded     BIGINT NOT NULL,
    period_end   BIGINT,
    paid_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, provider, payment_ref)
);
CREATE INDEX subscription_payments_by_order ON subscription_payments (order_id, period);
CREATE INDEX subscription_payments_by_time ON subscription_payments (tenant_id, paid_at);

-- A discount code's uses are counted at checkout (paid orders and checkouts not yet paid).
CREATE INDEX orders_by_discount_code ON orders (discount_code_id, status);
