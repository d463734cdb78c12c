-- the batches of several showtime writers in one statement, one transaction and one commit.
--
-- spread over many showtimes, each writer's batch is small (a command or two), and a commit
-- per batch made the commits, not the seats, the limit: every batch paid a round trip, a
-- function call, its locks and an fsync of its own. the process's writers hand their batches
-- of common events to one committer, which writes what has gathered meanwhile here.
--
-- the batches are independent: one whose showtime another process appended to since its
-- writer last looked must not be written, and must not take the others down with it. so the
-- aggregate locks of every batch are taken first (in the order append_events takes them, so
-- two callers cannot deadlock), and under them a batch whose first sequence is already taken
-- is left out and returned: nobody can append to these showtimes until this transaction ends,
-- so the check cannot race. the events of the other batches go through append_events (which
-- takes the same locks again, and keeps the log's ordering rule), then their lookup rows.
--
-- rows carry the (1-based) index of their batch: batch_* arrays have one entry per batch.
create function append_showtime_batches(
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
    -- one probe of the events key per batch. (as a join of the batches with events, the
    -- planner, which has no statistics for a growing events table, chose to hash every
    -- showtime event of the table.)
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
    insert into ticket_index (ticket_id, showtime_id, reservation_id, customer_id)
    select k, batch_ids[b]::uuid, r, c
    from unnest(ticket_batches, new_tickets, ticket_reservations, ticket_customers) as t(b, k, r, c)
    where b <> all(taken)
    on conflict do nothing;
    -- within a batch of common events the inserts come before the deletes (see
    -- append_showtime_batch), and batches of different showtimes touch different rows.
    -- "= any(array(...))", not "in (select ...)": a key lookup per row, never a join.
    delete from hold_timers
    where reservation_id = any(array(select r from unnest(timer_batches, timers_deleted) as t(b, r)
                                     where b <> all(taken)));
    delete from payments_in_flight
    where payment_id = any(array(select p from unnest(settled_batches, payments_settled) as t(b, p)
                                 where b <> all(taken)));
    return taken;
end
$$;
