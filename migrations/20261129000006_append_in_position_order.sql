-- appending events goes through append_events(), which takes a short advisory lock around
-- the insert. the insert is the first write of every append transaction, so it is where the
-- transaction gets its id (tx_id) and where its rows get their positions; doing both under
-- one lock makes tx_id order and position order agree across transactions. then the events
-- of every transaction that has ended (tx_id below pg_snapshot_xmin) form a prefix of the
-- log in position order, and a reader paging by position alone below that horizon never
-- skips an event that commits late. the lock covers the insert only, not the commit, so
-- transactions still commit concurrently.
create function append_events(
    aggregate_types text[],
    aggregate_ids   text[],
    sequences       bigint[],
    event_types     text[],
    event_versions  text[],
    payloads        jsonb[],
    metadatas       jsonb[]
) returns void
language plpgsql as $$
begin
    perform pg_advisory_lock(7468370273);
    begin
        insert into events
            (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
        select * from unnest(aggregate_types, aggregate_ids, sequences, event_types,
                             event_versions, payloads, metadatas);
    exception when others then
        perform pg_advisory_unlock(7468370273);
        raise;
    end;
    perform pg_advisory_unlock(7468370273);
end
$$;
