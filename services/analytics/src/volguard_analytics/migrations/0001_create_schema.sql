-- The analytics schema, owned by the analytics service (DESIGN §1, §6).
create schema if not exists analytics;
