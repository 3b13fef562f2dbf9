-- Strategy's decision journal and the state it restores from (issue 15).
-- Every row is written in the same transaction as the outbox rows of the intents and recommendations
-- the evaluation published and the processed-event record of its VolSnapshot, under the
-- single-active holder's fencing token: a redelivered snapshot finds it done, and a replica that takes
-- over rebuilds its cooldowns and once-per-trade exits from exactly these rows.

-- One row per evaluated VolSnapshot.
create table if not exists strategy.evaluations (
    vol_event_id text primary key,
    ts_event timestamptz not null,
    correlation_id text not null,
    -- The inputs the rule table reads first (the whole VolSnapshot is analytics' to keep).
    quality text not null,
    regime text not null,
    spot double precision not null,
    vix double precision,
    premium_signal text not null,
    term_signal text,
    atm_iv_percentile double precision,
    event_score integer not null,
    -- The ChainSnapshots the VolSnapshot named that strategy could not find (their expiries wait).
    chains_missing text[] not null,
    intents integer not null check (intents >= 0),
    -- How many recommendations went out on st.recommendations (the stream keeps the figures).
    recommendations integer not null check (recommendations >= 0),
    fencing_token bigint,
    recorded_at timestamptz not null default now()
);

create index if not exists evaluations_ts_event on strategy.evaluations (ts_event);

-- The journal proper: what each bucket did on each evaluation, and why (every WAIT with its reasons).
create table if not exists strategy.decisions (
    vol_event_id text not null references strategy.evaluations (vol_event_id),
    bucket text not null,
    ts_event timestamptz not null,
    correlation_id text not null,
    structure text not null,
    rule text not null,
    reasons text[] not null check (cardinality(reasons) > 0),
    intent_id text,
    primary key (vol_event_id, bucket)
);

create index if not exists decisions_ts_event on strategy.decisions (ts_event, bucket);

-- Every intent published on st.intents; entries restore the per-bucket cooldown and the regime they
-- were proposed in (the regime-change exit compares against it).
create table if not exists strategy.intents (
    intent_id text primary key,
    event_id text not null unique,
    vol_event_id text not null references strategy.evaluations (vol_event_id),
    ts_event timestamptz not null,
    correlation_id text not null,
    kind text not null,
    bucket text not null,
    structure text not null,
    trade_id text,
    -- The regime an entry was proposed in; null for exits and adjustments.
    regime text,
    event jsonb not null,
    fencing_token bigint
);

create index if not exists intents_kind_bucket on strategy.intents (kind, bucket, ts_event);

-- Exits and hedges already proposed, once per trade and rule.
create table if not exists strategy.proposed (
    trade_id text not null,
    rule text not null,
    vol_event_id text not null references strategy.evaluations (vol_event_id),
    ts_event timestamptz not null,
    primary key (trade_id, rule)
);

-- The regime each open trade was entered in, as strategy first learned it.
create table if not exists strategy.trade_regimes (
    trade_id text primary key,
    regime text not null,
    vol_event_id text not null references strategy.evaluations (vol_event_id)
);

-- The journal as the dashboard reads it (`/api/strategy/journal`, newest first by its first column):
-- each bucket's decision with the evaluation's data quality, regime and spot.
create or replace view strategy.journal as
select
    d.ts_event,
    d.bucket,
    d.structure,
    d.rule,
    d.reasons,
    d.intent_id,
    d.correlation_id,
    d.vol_event_id,
    e.quality,
    e.regime,
    e.spot,
    e.vix,
    e.premium_signal,
    e.term_signal,
    e.atm_iv_percentile,
    e.event_score
from strategy.decisions d
join strategy.evaluations e using (vol_event_id);
