-- Execution's facts (DESIGN §6): baskets as commanded and how they ended, every broker order (one slice of
-- one attempt at one leg) in its latest state, and every fill (append-only). Positions and PnL rebuild
-- from the fills alone.
create table execution.baskets (
    basket_id text primary key,
    command jsonb not null,  -- the ExecuteBasket as received
    received_at timestamptz not null,
    status text,             -- null while the basket is worked
    result jsonb,            -- the BasketResult published
    ended_at timestamptz
);
create index baskets_open on execution.baskets (received_at) where status is null;

create table execution.orders (
    basket_id text not null references execution.baskets (basket_id),
    leg_index integer not null,
    attempt integer not null,
    slice_index integer not null,
    client_order_id text not null,
    broker_order_id text,
    instrument_key text not null,
    side text not null check (side in ('BUY', 'SELL')),
    quantity integer not null check (quantity > 0),
    limit_price numeric not null check (limit_price > 0),
    status text not null,
    reported_filled_qty integer not null check (reported_filled_qty >= 0),
    reported_avg_price numeric,
    message text not null default '',
    updated_at timestamptz not null,
    primary key (basket_id, leg_index, attempt, slice_index)
);
create index orders_by_tag on execution.orders (client_order_id);

create table execution.fills (
    fill_id text primary key,
    basket_id text not null,
    leg_index integer not null,
    attempt integer not null,
    slice_index integer not null,
    broker_order_id text not null,
    instrument_key text not null,
    side text not null check (side in ('BUY', 'SELL')),
    quantity integer not null check (quantity > 0),
    price numeric not null check (price > 0),
    fees numeric not null check (fees >= 0),
    ts_event timestamptz not null
);
create index fills_by_basket on execution.fills (basket_id);
