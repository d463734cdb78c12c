-- the read side: the relay's checkpoint, projection bookkeeping, and the read models that
-- browsing and search are served from. every read model can be rebuilt from the events table.

-- "near me" search: earthdistance over cube gives a distance that a gist index can serve;
-- pg_trgm makes substring search on names, cities and titles indexable.
create extension if not exists cube;
create extension if not exists earthdistance;
create extension if not exists pg_trgm;

-- wake the relay when events are appended. notifications are delivered at commit, once per
-- transaction and channel however many rows it inserted.
create function notify_events_appended() returns trigger
language plpgsql as $$
begin
    perform pg_notify('events_appended', '');
    return null;
end
$$;

create trigger events_appended
    after insert on events
    for each statement execute function notify_events_appended();

-- where the relay has published up to, per namespace, in (tx_id, position) order.
create table relay_checkpoints (
    name       text primary key,
    tx_id      xid8   not null,
    position   bigint not null,
    updated_at timestamptz not null default now()
);

-- per projection and aggregate, the last event sequence applied: makes applying idempotent
-- (a redelivered event is skipped) and shows gaps (a missing event is fetched, never skipped).
create table projection_progress (
    projection     text   not null,
    aggregate_type text   not null,
    aggregate_id   text   not null,
    last_sequence  bigint not null,
    primary key (projection, aggregate_type, aggregate_id)
);

-- events a projection failed to apply again and again. their aggregate waits behind them
-- until an operator fixes the cause; the projector retries parked aggregates on start.
create table parked_events (
    projection     text   not null,
    aggregate_type text   not null,
    aggregate_id   text   not null,
    sequence       bigint not null,
    event_type     text   not null,
    error          text   not null,
    parked_at      timestamptz not null default now(),
    primary key (projection, aggregate_type, aggregate_id)
);

create table theaters_view (
    id         uuid primary key,
    name       text not null,
    address    text not null,
    city       text not null,
    lat        double precision not null,
    lon        double precision not null,
    timezone   text not null,
    -- [{id, name, layout, capacity}], served as is.
    screens    jsonb not null
);

create index theaters_view_earth_idx on theaters_view using gist (ll_to_earth(lat, lon));
create index theaters_view_name_trgm_idx on theaters_view using gin (name gin_trgm_ops);
create index theaters_view_city_trgm_idx on theaters_view using gin (city gin_trgm_ops);

create table movies_view (
    id              uuid primary key,
    title           text not null,
    runtime_minutes integer not null,
    rating          text,
    genres          text[] not null default '{}',
    language        text,
    release_date    date,
    synopsis        text,
    poster_url      text,
    trailer_url     text
);

create index movies_view_title_trgm_idx on movies_view using gin (title gin_trgm_ops);

create table showtimes_view (
    id          uuid primary key,
    movie_id    uuid not null,
    theater_id  uuid not null,
    screen_id   uuid not null,
    starts_at   timestamptz not null,
    ends_at     timestamptz not null,
    format      text,
    prices      jsonb not null,
    cancelled   boolean not null default false,
    capacity    integer not null
);

create index showtimes_view_movie_idx on showtimes_view (movie_id, starts_at);
create index showtimes_view_theater_idx on showtimes_view (theater_id, starts_at);
create index showtimes_view_starts_idx on showtimes_view (starts_at);

-- one row per seat of each showtime. the status is computed when read, from the time: a
-- seat is sold when it has a valid ticket, held while held_until is in the future, else
-- available. so an expired hold shows its seats available from the instant it expires.
create table seats_view (
    showtime_id    uuid    not null,
    seat           text    not null,
    row_name       text    not null,
    row_index      integer not null,
    seat_index     integer not null,
    column_index   integer not null,
    kind           text    not null,
    price          jsonb   not null,
    reservation_id uuid,
    customer_id    uuid,
    held_until     timestamptz,
    ticket_id      uuid,
    primary key (showtime_id, seat)
);

create index seats_view_reservation_idx on seats_view (reservation_id)
    where reservation_id is not null;

-- open holds, to put a hold's own expiry back when its payment fails.
create table holds_view (
    reservation_id uuid primary key,
    showtime_id    uuid not null,
    expires_at     timestamptz not null
);

create table tickets_view (
    ticket_id      uuid primary key,
    customer_id    uuid not null,
    reservation_id uuid not null,
    showtime_id    uuid not null,
    seat           text not null,
    price          jsonb not null,
    code           text not null,
    status         text not null,
    issued_at      timestamptz not null
);

create index tickets_view_customer_idx on tickets_view (customer_id);
