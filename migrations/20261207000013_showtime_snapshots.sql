-- the latest snapshot of each showtime's state, so that its writer starts from it and the
-- events after it instead of folding its whole history.
--
-- a snapshot is only a cache of the log: `state` is the folded `Showtime` as of `sequence`,
-- written by the showtime's writer every MARQUEE_SNAPSHOT_EVERY events. `format` names the
-- state's shape and fold rules (`Showtime::SNAPSHOT_FORMAT`); a reader ignores a snapshot of
-- another format, or one it cannot read, and folds the log from the start. deleting rows here
-- loses nothing.
create table showtime_snapshots (
    showtime_id text        primary key,
    sequence    bigint      not null check (sequence > 0),
    format      int         not null,
    state       jsonb       not null,
    taken_at    timestamptz not null default now()
);
