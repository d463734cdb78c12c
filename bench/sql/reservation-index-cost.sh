#!/usr/bin/env bash
# What the reservation lookup index (migrations/*_reservation_events.sql) costs the write path:
# the same hold-shaped events (half `SeatsHeld`, half `HoldReleased`, as a showtime under
# churn writes them) inserted into the `events` table with the index and into a copy without
# it, 200 rows a transaction like a writer's batch, timed side by side by farm-bench (A: with
# the index, B: without).
#
#   bench/sql/reservation-index-cost.sh [ROWS]      # default 50,000 rows a run
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-50000}
db=marquee_bench_index_cost
psql="psql -h 127.0.0.1 -U root -q -v ON_ERROR_STOP=1"
dropdb -h 127.0.0.1 -U root --if-exists "$db"
createdb -h 127.0.0.1 -U root "$db"
$psql -d "$db" -f migrations/20261129000001_events.sql
$psql -d "$db" -f migrations/20261207000012_reservation_events.sql
$psql -d "$db" -c "create table events_without (like events including all)"
$psql -d "$db" -Atc "select indexname from pg_indexes
                     where tablename = 'events_without' and indexdef like '%reservation_id%'" |
    while read -r index; do $psql -d "$db" -c "drop index $index"; done

# Reservation ids are UUIDv7 (time first), as the engine mints them.
v7="(lpad(to_hex((extract(epoch from clock_timestamp()) * 1000)::bigint), 12, '0') || '7'
     || substr(md5(random()::text), 1, 19))::uuid"
work=$(mktemp -d)
trap 'rm -rf "$work"; dropdb -h 127.0.0.1 -U root --if-exists "$db"' EXIT
for table in events events_without; do
    {
        echo "truncate $table;"
        for ((first = 1; first <= rows; first += 200)); do
            cat <<SQL
insert into $table (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
select 'Showtime', 'churn', s,
       case when s % 2 = 0 then 'SeatsHeld' else 'HoldReleased' end, '1',
       case when s % 2 = 0 then jsonb_build_object('SeatsHeld', jsonb_build_object(
                'reservation_id', $v7, 'customer_id', gen_random_uuid(),
                'seats', jsonb_build_array('F7', 'F8'),
                'total', jsonb_build_object('amount', 2400, 'currency', 'USD'),
                'held_at', now(), 'expires_at', now() + interval '7 minutes',
                'row_started_at', null))
            else jsonb_build_object('HoldReleased', jsonb_build_object(
                'reservation_id', $v7, 'reason', 'replaced', 'released_at', now()))
       end,
       '{"actor": "customer", "command": "HoldSeats"}'
from generate_series($first, $((first + 199))) s;
SQL
        done
    } >"$work/$table.sql"
done
farm-bench -n 7 --timeout 900 --vs "$psql -d $db -f $work/events_without.sql" \
    -- $psql -d "$db" -f "$work/events.sql"
