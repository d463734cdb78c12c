-- responses remembered per Idempotency-Key, so that a retried create does nothing twice.
-- scope is the caller's user id (the nil uuid for anonymous callers): two users may pick the
-- same key without seeing each other's responses.
create table idempotency_keys (
    scope          uuid not null,
    key            text not null,
    -- sha-256 of method, path and body: the same key with another request is refused.
    request_hash   text not null,
    -- null while the first request is still being handled.
    status         smallint,
    content_type   text,
    body           bytea,
    created_at     timestamptz not null default now(),
    primary key (scope, key)
);

create index idempotency_keys_created_idx on idempotency_keys (created_at);
