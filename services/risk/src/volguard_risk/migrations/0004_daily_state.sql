-- Issue 16 review: the equity at each trading day's open, so the day's P&L (soft stop, hard stop,
-- daily loss limit) counts the losses taken before a restart, and a restart on a later day knows the
-- stops of the day before are to clear. One row per trading day, written once: the first moment the
-- day's equity is known (every open leg marked).

create table if not exists risk.daily_state (
    day date primary key,
    open_equity numeric not null,
    set_at timestamptz not null,
    fencing_token bigint
);
