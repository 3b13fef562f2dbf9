-- The market schema, owned by the market_data service (DESIGN §1, §6).
create schema if not exists market;
