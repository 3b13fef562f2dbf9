-- Commands that arrived while execution and the broker did not yet agree (start, takeover, a failed
-- periodic reconciliation). They are held here, acknowledged on the stream but not carried out, and
-- released in arrival order once reconciliation agrees: held, never rejected nor dead-lettered.
create table execution.held_commands (
    seq bigserial primary key,
    event_id text not null unique,
    command jsonb not null,  -- the ExecuteBasket, CancelOrders or FlattenAll as received
    held_at timestamptz not null
);
