-- the lookup rows that showtime events imply, written in one place.
--
-- the common events (holds, releases, expiries, tickets issued) imply inserts into
-- reservation_index, hold_timers and ticket_index, and deletes from hold_timers and
-- payments_in_flight. these were written out three times: in append_showtime_batch, in
-- append_showtime_batches, and as separate statements in booking_index.rs for batches that
-- also hold a payment or a refund. record_lookups is now the only place; the two functions
-- and booking_index.rs call it. (which rows an event implies is decided in booking_index.rs,
-- `Lookups::add`; the rare events' own rows are written there too, one statement each.)
--
-- rows carry the (1-based) index of their batch in batch_ids, the showtime ids; rows of a
-- batch listed in taken are left out. within a batch of common events the inserts come before
-- the deletes, which is their order in the batch whenever a caller sends them together.
create function record_lookups(
    batch_ids            text[],
    taken                int[],
    reservation_batches  int[],
    new_reservations     uuid[],
    new_customers        uuid[],
    new_expiries         timestamptz[],
    ticket_batches       int[],
    new_tickets          uuid[],
    ticket_reservations  uuid[],
    ticket_customers     uuid[],
    timer_batches        int[],
    timers_deleted       uuid[],
    settled_batches      int[],
    payments_settled     uuid[]
) returns void
language plpgsql as $$
begin
    if cardinality(new_reservations) > 0 then
        insert into reservation_index (reservation_id, showtime_id, customer_id)
        select r, batch_ids[b]::uuid, c
        from unnest(reservation_batches, new_reservations, new_customers) as t(b, r, c)
        where b <> all(taken)
        on conflict do nothing;
        insert into hold_timers (reservation_id, showtime_id, expires_at, due_at)
        select r, batch_ids[b]::uuid, e, e
        from unnest(reservation_batches, new_reservations, new_expiries) as t(b, r, e)
        where b <> all(taken)
        on conflict do nothing;
    end if;
    if cardinality(new_tickets) > 0 then
        insert into ticket_index (ticket_id, showtime_id, reservation_id, customer_id)
        select k, batch_ids[b]::uuid, r, c
        from unnest(ticket_batches, new_tickets, ticket_reservations, ticket_customers)
             as t(b, k, r, c)
        where b <> all(taken)
        on conflict do nothing;
    end if;
    -- batches of different showtimes touch different rows. "= any(array(...))", not
    -- "in (select ...)": a key lookup per row, never a join.
    if cardinality(timers_deleted) > 0 then
        delete from hold_timers
        where reservation_id = any(array(select r from unnest(timer_batches, timers_deleted)
                                                        as t(b, r)
                                         where b <> all(taken)));
    end if;
    if cardinality(payments_settled) > 0 then
        delete from payments_in_flight
        where payment_id = any(array(select p from unnest(settled_batches, payments_settled)
                                                    as t(b, p)
                                     where b <> all(taken)));
    end if;
end
$$;

-- one showtime's batch: as before, now with its lookups through record_lookups. marquee
-- writes a batch alone this way (one statement, one commit).
create or replace function append_showtime_batch(
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
    perform record_lookups(array[showtime::text], '{}',
                           array_fill(1, array[cardinality(new_reservations)]),
                           new_reservations, new_customers, new_expiries,
                           array_fill(1, array[cardinality(new_tickets)]),
                           new_tickets, ticket_reservations, ticket_customers,
                           array_fill(1, array[cardinality(timers_deleted)]), timers_deleted,
                           array_fill(1, array[cardinality(payments_settled)]),
                           payments_settled);
end
$$;

-- several showtimes' batches: as before (see 20261201000010_append_showtime_batches.sql for
-- why the locks come first and how a taken batch is left out), now with their lookups through
-- record_lookups.
create or replace function append_showtime_batches(
    batch_ids            text[],
    batch_first          bigint[],
    event_batches        int[],
    sequences            bigint[],
    event_types          text[],
    event_versions       text[],
    payloads             jsonb[],
    metadatas            jsonb[],
    reservation_batches  int[],
    new_reservations     uuid[],
    new_customers        uuid[],
    new_expiries         timestamptz[],
    ticket_batches       int[],
    new_tickets          uuid[],
    ticket_reservations  uuid[],
    ticket_customers     uuid[],
    timer_batches        int[],
    timers_deleted       uuid[],
    settled_batches      int[],
    payments_settled     uuid[]
) returns int[]
language plpgsql as $$
declare
    aggregate text;
    taken int[];
    batch int;
begin
    for aggregate in
        select distinct 'Showtime:' || i from unnest(batch_ids) as a(i) order by 1
    loop
        perform pg_advisory_xact_lock(7468, hashtext(aggregate));
    end loop;
    taken := '{}';
    for batch in 1 .. cardinality(batch_ids) loop
        if exists (select 1 from events
                   where aggregate_type = 'Showtime' and aggregate_id = batch_ids[batch]
                     and sequence >= batch_first[batch]) then
            taken := taken || batch;
        end if;
    end loop;
    if cardinality(taken) = cardinality(batch_ids) then
        return taken;
    end if;

    perform append_events(array_agg('Showtime'::text order by n), array_agg(batch_ids[b] order by n),
                          array_agg(s order by n), array_agg(et order by n),
                          array_agg(ev order by n), array_agg(p order by n),
                          array_agg(m order by n))
    from unnest(event_batches, sequences, event_types, event_versions, payloads, metadatas)
         with ordinality as u(b, s, et, ev, p, m, n)
    where b <> all(taken);

    perform record_lookups(batch_ids, taken, reservation_batches, new_reservations,
                           new_customers, new_expiries, ticket_batches, new_tickets,
                           ticket_reservations, ticket_customers, timer_batches, timers_deleted,
                           settled_batches, payments_settled);
    return taken;
end
$$;
