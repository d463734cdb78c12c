-- the event log, which is also the outbox.
-- the first seven columns are postgres-es's own layout (it names them on insert, so it keeps
-- working); payload and metadata are jsonb so that analysts can query inside them.
create table events (
    aggregate_type text   not null,
    aggregate_id   text   not null,
    sequence       bigint not null check (sequence >= 0),
    event_type     text   not null,
    event_version  text   not null,
    payload        jsonb  not null,
    metadata       jsonb  not null,
    -- global order. a bigserial alone is not enough for a tailing reader: identities are
    -- handed out at insert time but become visible at commit time, so a long transaction can
    -- commit a smaller position after a reader has passed it. readers therefore page by
    -- (tx_id, position) and stop below pg_snapshot_xmin(pg_current_snapshot()), the oldest
    -- transaction still running, which cannot commit anything they have already passed.
    position       bigint generated always as identity,
    tx_id          xid8        not null default pg_current_xact_id(),
    recorded_at    timestamptz not null default now(),
    -- one sequence number per aggregate: the optimistic-concurrency backstop. two writers of
    -- the same aggregate cannot both append sequence n.
    primary key (aggregate_type, aggregate_id, sequence)
);

create unique index events_position_idx on events (position);
create index events_tx_position_idx on events (tx_id, position);
