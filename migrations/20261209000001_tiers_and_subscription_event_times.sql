-- A price's tier on what it grants: an entitlement from an SD price plays renditions up to
-- its lines (360 for "360p"); NULL plays every rendition.
ALTER TABLE entitlements ADD COLUMN max_lines BIGINT;

-- When the provider said the subscription's status (its event's time): an older event that
-- arrives later does not undo a newer status (an old "active" after "unpaid").
ALTER TABLE subscriptions ADD COLUMN status_at BIGINT;

-- A checkout that gives an email buys as the tenant's customer with that email, if any.
CREATE INDEX customers_by_email ON customers (tenant_id, lower(email));
