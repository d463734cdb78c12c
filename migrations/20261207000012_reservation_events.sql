-- the events about one reservation, found without reading its showtime's whole stream.
--
-- a showtime keeps in memory only the holds its decisions need (open and paid ones); a hold
-- that is released or runs out is dropped, and `GET /v1/reservations/{id}` reads it back from
-- the log: its `SeatsHeld`, the payments tried on it and the event that closed it. these are
-- the event types that shape a hold, each with the reservation's id at the top of its fields.
create index events_reservation_idx on events (((payload -> event_type ->> 'reservation_id')::uuid))
    where aggregate_type = 'Showtime'
      and event_type in ('SeatsHeld', 'HoldReleased', 'HoldExpired', 'PaymentStarted', 'PaymentFailed');
