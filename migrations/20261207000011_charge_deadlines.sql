-- When a payment in flight may be reconciled, and how often asking about it has failed.
--
-- A payment is stale only once no process can still be waiting for its charge's answer. The
-- process that sends the charge writes its own deadline (the time it sends plus its own
-- timeout) before sending, so neither a command that waited in a busy showtime's queue nor a
-- reconciler with a shorter timeout in another process can settle a charge still in flight.
-- A row without a deadline was never sent; it is stale some time after it was recorded, and
-- the reconciler first claims it (sets a deadline in the past), so that a late sender sees the
-- claim and does not charge. The table only ever holds the payments in flight, so the
-- reconciler's scan needs no index of its own.

alter table payments_in_flight
    -- when the payment was recorded as started: the insert's own time, not its transaction's
    -- (an append can wait for a lock, and the row is stale only some time after it is visible)
    add column recorded_at timestamptz not null default clock_timestamp(),
    -- set by the sender just before charging, or by the reconciler claiming an unsent payment
    add column charge_deadline timestamptz,
    -- failed reconciliation attempts, and when to try again: each row backs off on its own,
    -- so rows the processor keeps failing on never hold up the others
    add column attempts integer not null default 0,
    add column retry_at timestamptz,
    add column last_error text;
