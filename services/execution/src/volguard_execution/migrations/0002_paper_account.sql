-- The paper broker's account (adapters/paper_broker.py): every paper order's latest state and every
-- paper trade, so paper positions survive a restart or a failover and reconciliation means something in
-- paper mode. Append-only trades; orders are upserted by the exchange order id.
create table execution.paper_sessions (
    session integer primary key,
    opened_at timestamptz not null
);

create table execution.paper_orders (
    broker_order_id text primary key,
    client_order_id text not null,
    instrument_key text not null,
    side text not null check (side in ('BUY', 'SELL')),
    quantity integer not null check (quantity > 0),
    limit_price numeric,
    status text not null,
    filled_qty integer not null check (filled_qty >= 0),
    avg_price numeric,
    message text not null default '',
    ts_event timestamptz not null
);
create index paper_orders_by_tag on execution.paper_orders (client_order_id);

create table execution.paper_trades (
    trade_id text primary key,
    broker_order_id text not null,
    client_order_id text not null,
    instrument_key text not null,
    side text not null check (side in ('BUY', 'SELL')),
    quantity integer not null check (quantity > 0),
    price numeric not null check (price > 0),
    first_fill_of_order boolean not null,
    ts_event timestamptz not null
);
