-- lookups the command side needs to route a request to its showtime. they are written in the
-- same transaction as the events they come from, so they can never disagree with the log.

-- which showtime (and customer) a reservation belongs to.
create table reservation_index (
    reservation_id uuid primary key,
    showtime_id    uuid not null,
    customer_id    uuid not null
);

-- which showtime (and customer) a ticket belongs to.
create table ticket_index (
    ticket_id      uuid primary key,
    showtime_id    uuid not null,
    reservation_id uuid not null,
    customer_id    uuid not null
);

create index ticket_index_customer_idx on ticket_index (customer_id);

-- open holds and when each stops keeping its seats: the expiry timer's work list. a row goes
-- when the hold is released, expires or is paid.
create table hold_timers (
    reservation_id uuid primary key,
    showtime_id    uuid not null,
    expires_at     timestamptz not null,
    -- expires_at while held; the end of the payment pin while paying.
    due_at         timestamptz not null
);

create index hold_timers_due_idx on hold_timers (due_at);
