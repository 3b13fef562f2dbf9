-- The dashboard schema, owned by dashboard_api (DESIGN §1, §6): who asked for what, and who was told.
create schema if not exists dashboard;

-- One row per mutating request, whatever its outcome (refused, published, failed).
create table audit_log (
    id           bigserial   primary key,
    at           timestamptz not null default now(),
    actor        text        not null,          -- who: the client address and token fingerprint
    action       text        not null,          -- what: the endpoint
    request      jsonb       not null,
    outcome      text        not null,          -- 'refused', 'published', 'rejected'
    detail       text        not null default '',
    event_ids    text[]      not null default '{}'  -- the Commands put on ctl.commands
);
create index audit_log_at on audit_log (at);

-- Every alert notification attempt, per channel.
create table notification_log (
    id           bigserial   primary key,
    at           timestamptz not null default now(),
    alert_event_id text      not null,
    code         text        not null,
    severity     text        not null,
    channel      text        not null,          -- 'log', 'telegram', 'email'
    outcome      text        not null,          -- 'sent', 'failed', 'deduplicated', 'rate_limited'
    detail       text        not null default ''
);
create index notification_log_at on notification_log (at);
