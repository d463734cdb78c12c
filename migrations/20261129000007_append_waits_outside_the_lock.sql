-- append_events, revised. two appends to the same aggregate used to meet inside the global
-- lock: the second insert waited there (on the first transaction's uncommitted key) until
-- the first committed, stalling every other append meanwhile. now each append first takes a
-- transaction-level lock per aggregate it writes (two-key form, class 7468, so it cannot
-- collide with the one-key locks), in a fixed order so two appends cannot deadlock. a second
-- writer of the same aggregate waits there, outside the global lock, and then fails at once
-- on the key. the global lock is also released when the statement is cancelled, which
-- "when others" does not catch.
create or replace function append_events(
    aggregate_types text[],
    aggregate_ids   text[],
    sequences       bigint[],
    event_types     text[],
    event_versions  text[],
    payloads        jsonb[],
    metadatas       jsonb[]
) returns void
language plpgsql as $$
declare
    aggregate text;
begin
    for aggregate in
        select distinct t || ':' || i from unnest(aggregate_types, aggregate_ids) as a(t, i) order by 1
    loop
        perform pg_advisory_xact_lock(7468, hashtext(aggregate));
    end loop;
    perform pg_advisory_lock(7468370273);
    begin
        insert into events
            (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
        select * from unnest(aggregate_types, aggregate_ids, sequences, event_types,
                             event_versions, payloads, metadatas);
    exception when others or query_canceled then
        perform pg_advisory_unlock(7468370273);
        raise;
    end;
    perform pg_advisory_unlock(7468370273);
end
$$;
