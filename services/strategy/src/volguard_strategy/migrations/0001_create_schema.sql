-- The strategy schema, owned by the strategy service (DESIGN §1, §6).
create schema if not exists strategy;
