-- Daily ATM IV history: the close of each session's 30-day constant-maturity ATM implied vol (a
-- fraction), what the ATM IV percentile and rank are computed over. Analytics writes the closes it
-- measures (source 'analytics'); days it did not see are seeded from market.daily_bars symbol
-- NIFTYATMIV (imported files, the simulator's own history), never over a measured close.
create table atm_iv_daily (
    trade_date date             primary key,
    atm_iv     double precision not null check (atm_iv > 0 and atm_iv < 5),
    source     text             not null,
    stored_at  timestamptz      not null default now()
);
