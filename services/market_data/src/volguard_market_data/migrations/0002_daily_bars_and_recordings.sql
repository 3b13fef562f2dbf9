-- Daily OHLC history of NIFTY and India VIX: GARCH, realised vol and IV percentile read it.
-- One row per (symbol, trading day); imports and the simulator's seed are idempotent upserts.
create table daily_bars (
    symbol      text        not null,          -- 'NIFTY' or 'INDIAVIX'
    trade_date  date        not null,
    open        numeric     not null check (open > 0),
    high        numeric     not null check (high > 0),
    low         numeric     not null check (low > 0),
    close       numeric     not null check (close > 0),
    volume      bigint      check (volume >= 0),
    source      text        not null,          -- 'nse-csv:<file>', 'simulator:<seed>', 'upstox'
    imported_at timestamptz not null default now(),
    primary key (symbol, trade_date),
    check (low <= high and low <= open and open <= high and low <= close and close <= high)
);

-- Recorded sessions (volguard record): where the files are and what they hold.
create table recorded_sessions (
    session_id   text        primary key,
    directory    text        not null,
    started_at   timestamptz not null,
    ended_at     timestamptz,
    first_event  timestamptz,
    last_event   timestamptz,
    entries      bigint      not null default 0 check (entries >= 0),
    streams      text[]      not null,
    feed         text        not null
);
