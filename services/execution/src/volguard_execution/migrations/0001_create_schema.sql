-- The execution schema, owned by the execution service (DESIGN §1, §6).
create schema if not exists execution;
