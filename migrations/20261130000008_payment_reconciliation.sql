-- Payments whose outcome is not recorded yet, and refunds the card processor has not confirmed.
--
-- Both are written by the command side in the same transaction as the events they follow
-- (like reservation_index and hold_timers), so a crash can never lose one: a process killed
-- between charging a card and recording the outcome leaves its payment here, and the
-- reconciler asks the processor what happened; a refund recorded in the log stays here until
-- the processor has confirmed it (a transactional outbox).

create table payments_in_flight (
    payment_id     uuid primary key,
    showtime_id    uuid not null,
    reservation_id uuid not null,
    started_at     timestamptz not null,
    pinned_until   timestamptz not null
);
create index payments_in_flight_started_idx on payments_in_flight (started_at);

create table refunds_due (
    -- the payment id for a payment given back whole, `<payment id>/<ticket id>` for one ticket
    refund_id   text primary key,
    payment_id  uuid not null,
    amount      bigint not null,
    currency    text not null,
    recorded_at timestamptz not null,
    due_at      timestamptz not null,
    attempts    integer not null default 0,
    last_error  text
);
create index refunds_due_due_idx on refunds_due (due_at);

-- Payments started before this migration and never settled. (Payloads are wrapped in their
-- event type: {"PaymentStarted": {...}}.)
insert into payments_in_flight (payment_id, showtime_id, reservation_id, started_at, pinned_until)
select (p->>'payment_id')::uuid, s.aggregate_id::uuid, (p->>'reservation_id')::uuid,
       (p->>'started_at')::timestamptz, (p->>'pinned_until')::timestamptz
from events s, lateral (select s.payload->'PaymentStarted') as started(p)
where s.aggregate_type = 'Showtime' and s.event_type = 'PaymentStarted'
  and not exists (
      select 1 from events e
      where e.aggregate_type = 'Showtime' and e.aggregate_id = s.aggregate_id
        and e.event_type in ('PaymentFailed', 'TicketsIssued', 'PaymentRefunded')
        and e.payload->e.event_type->>'payment_id' = p->>'payment_id');

-- The built-in test card processor's own records, standing in for a real processor's: which
-- payments it charged (or declined) and which refunds it paid. Keyed by Marquee's ids, so a
-- retried charge or refund is answered from here instead of moving money twice.
create table test_processor_charges (
    payment_id uuid primary key,
    amount     bigint not null,
    currency   text not null,
    -- `charged`, or the reason it was declined
    outcome    text not null,
    at         timestamptz not null default now()
);

create table test_processor_refunds (
    refund_id  text primary key,
    payment_id uuid not null,
    amount     bigint not null,
    currency   text not null,
    at         timestamptz not null default now()
);
