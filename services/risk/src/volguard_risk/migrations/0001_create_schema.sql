-- The risk schema, owned by the risk service (DESIGN §1, §6).
create schema if not exists risk;
