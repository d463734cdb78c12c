-- a showtime writer's batch in one statement: its events (through append_events, so the
-- ordering rules of the log hold) and the lookup rows they imply (see booking_index.rs).
--
-- run on its own, outside an explicit transaction, the statement is its own transaction: one
-- round trip and one commit for the whole batch. the same batch as separate statements took
-- begin, the events, two or three lookup tables and commit, six round trips, and the writer's
-- queue waited on every one of them (under load each is a wake-up of a backend that has to
-- wait for a core).
--
-- only batches of the common events come here (holds, releases, expiries, tickets issued);
-- one with a payment starting or failing, or a refund, is written statement by statement in
-- a transaction, in event order. within a batch of common events the inserts come before the
-- deletes, which is their order in the batch whenever the caller sends it here.
create function append_showtime_batch(
    aggregate_types     text[],
    aggregate_ids       text[],
    sequences           bigint[],
    event_types         text[],
    event_versions      text[],
    payloads            jsonb[],
    metadatas           jsonb[],
    showtime            uuid,
    new_reservations    uuid[],
    new_customers       uuid[],
    new_expiries        timestamptz[],
    new_tickets         uuid[],
    ticket_reservations uuid[],
    ticket_customers    uuid[],
    timers_deleted      uuid[],
    payments_settled    uuid[]
) returns void
language plpgsql as $$
begin
    perform append_events(aggregate_types, aggregate_ids, sequences, event_types,
                          event_versions, payloads, metadatas);
    if cardinality(new_reservations) > 0 then
        insert into reservation_index (reservation_id, showtime_id, customer_id)
        select r, showtime, c from unnest(new_reservations, new_customers) as t(r, c)
        on conflict do nothing;
        insert into hold_timers (reservation_id, showtime_id, expires_at, due_at)
        select r, showtime, e, e from unnest(new_reservations, new_expiries) as t(r, e)
        on conflict do nothing;
    end if;
    if cardinality(new_tickets) > 0 then
        insert into ticket_index (ticket_id, showtime_id, reservation_id, customer_id)
        select t, showtime, r, c
        from unnest(new_tickets, ticket_reservations, ticket_customers) as x(t, r, c)
        on conflict do nothing;
    end if;
    if cardinality(timers_deleted) > 0 then
        delete from hold_timers where reservation_id = any(timers_deleted);
    end if;
    if cardinality(payments_settled) > 0 then
        delete from payments_in_flight where payment_id = any(payments_settled);
    end if;
end
$$;
