-- Risk's durable state (issue 16): trading-state transitions, the capital ledger and every decision.
-- Each row is written in the same transaction as the outbox rows of the events it caused, under the
-- single-active holder's fencing token, so a replica that took over rebuilds exactly this.

create table if not exists risk.trading_state_transitions (
    seq bigserial primary key,
    ts_event timestamptz not null,
    state text not null,
    previous text not null,
    reason text not null,
    -- The rk.state event as published (causes with their start times): the machine restores from it.
    event jsonb not null,
    fencing_token bigint
);

create table if not exists risk.capital_ledger (
    seq bigint primary key,
    ts_event timestamptz not null,
    bucket text not null,
    kind text not null,
    amount numeric not null check (amount >= 0),
    reference text not null,
    reason text not null,
    fencing_token bigint
);

create or replace function risk.refuse_ledger_change() returns trigger language plpgsql as $$
begin
    raise exception 'risk.capital_ledger is append-only (% refused)', tg_op;
end
$$;

create trigger capital_ledger_append_only before update or delete on risk.capital_ledger
    for each row execute function risk.refuse_ledger_change();

-- One decision per intent id: a redelivered or replayed intent finds its decision here.
create table if not exists risk.decisions (
    intent_id text primary key,
    ts_event timestamptz not null,
    approved boolean not null,
    basket_id text,
    decision jsonb not null,
    fencing_token bigint
);

-- The book: trades risk approved (or adopted), which basket fills belong to which trade, and every fill.
-- Positions and P&L are derived from these rows alone (volguard_risk.domain.portfolio).
create table if not exists risk.trades (
    trade_id text primary key,
    bucket text not null,
    structure text not null,
    origin text not null,
    opened_at timestamptz not null,
    fencing_token bigint
);

create table if not exists risk.baskets (
    basket_id text primary key,
    trade_id text not null references risk.trades (trade_id),
    units bigint not null check (units > 0),
    reserved numeric not null check (reserved >= 0),
    fencing_token bigint
);

create table if not exists risk.fills (
    fill_id text primary key,
    basket_id text not null references risk.baskets (basket_id),
    seq bigserial not null,
    event jsonb not null,
    cash_flow numeric not null,
    charges numeric not null,
    realised numeric not null,
    fencing_token bigint
);
