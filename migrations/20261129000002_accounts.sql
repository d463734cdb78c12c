-- user accounts. personal data lives here, never in events: events carry the id only.
create table accounts (
    id            uuid primary key,
    email         text not null,
    password_hash text not null,
    name          text not null,
    address       text,
    roles         text[] not null default '{customer}',
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

-- emails compare case-insensitively: Ann@x.org and ann@x.org are one account.
create unique index accounts_email_idx on accounts (lower(email));

-- engine-wide settings that must survive restarts and be shared by every process, such as the
-- token signing secret generated when MARQUEE_JWT_SECRET is not set.
create table settings (
    key        text primary key,
    value      text not null,
    created_at timestamptz not null default now()
);
