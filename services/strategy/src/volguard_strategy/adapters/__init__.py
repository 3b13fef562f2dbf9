"""Strategy's adapters: the chain snapshots from Redis, the journal in Postgres."""
