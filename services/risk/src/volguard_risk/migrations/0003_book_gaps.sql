-- Issue 16 gaps: the instruments each basket trades and whether execution finished it (a broker
-- position in an instrument a basket still in flight trades is that basket's, not an EXTERNAL one);
-- positions adopted as EXTERNAL (the book rebuilds them with the fills); the most a trade was approved
-- to lose (risk forces it out there); the exchange orders execution reported sent (the order budget).

alter table risk.baskets add column if not exists instruments text[] not null default '{}';
alter table risk.baskets add column if not exists finished boolean not null default false;

alter table risk.trades add column if not exists max_loss numeric check (max_loss >= 0);

create table if not exists risk.external_positions (
    trade_id text primary key references risk.trades (trade_id),
    instrument_key text not null,
    expiry date not null,
    strike numeric not null,
    option_type text not null,
    quantity bigint not null check (quantity <> 0),
    -- The chain mid it was adopted at: its P&L counts from the adoption, the broker's cost is not known.
    price numeric not null check (price > 0),
    adopted_at timestamptz not null,
    fencing_token bigint
);

create table if not exists risk.orders_sent (
    client_order_id text not null,
    slice_index int not null,
    ts_event timestamptz not null,
    fencing_token bigint,
    primary key (client_order_id, slice_index)
);
create index if not exists orders_sent_ts on risk.orders_sent (ts_event);
