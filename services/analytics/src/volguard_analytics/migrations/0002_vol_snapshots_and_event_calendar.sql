-- Throttled history of the volatility picture, for the dashboard's charts (one row per persisted instant).
create table vol_snapshots (
    ts_event     timestamptz primary key,
    event_id     text        not null,
    quality      text        not null,
    regime       text,
    atm_iv_front double precision,
    vix          double precision,
    payload      jsonb       not null,   -- the VolSnapshot as published on an.vol
    stored_at    timestamptz not null default now()
);

-- Scheduled events that move NIFTY vol (importable; RBI policy, Union Budget and expiries are built in).
create table event_calendar (
    event_date  date        not null,
    event_time  text,                      -- as published, e.g. '11:00 PM' or '12:30 AM (next day)'
    name        text        not null,
    country     text        not null,
    importance  text        not null,
    source      text        not null,
    imported_at timestamptz not null default now(),
    primary key (event_date, name, country)
);
