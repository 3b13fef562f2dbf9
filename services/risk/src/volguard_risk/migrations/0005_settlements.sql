-- Issue 16 review: legs past their expiry are closed by a cash settlement at intrinsic value, not by
-- a fill; the book replays these after the fills when it is rebuilt.

create table if not exists risk.settlements (
    trade_id text not null references risk.trades (trade_id),
    instrument_key text not null,
    quantity bigint not null check (quantity <> 0),
    price numeric not null check (price >= 0),
    charges numeric not null check (charges >= 0),
    ts_event timestamptz not null,
    basis text not null,
    fencing_token bigint,
    primary key (trade_id, instrument_key)
);
