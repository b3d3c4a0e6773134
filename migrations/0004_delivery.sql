-- Result delivery: signed webhooks (per-job URL or the tenant's endpoint), and a revision on every
-- job so server-sent events can be numbered and resumed.

-- Bumped at each status change; SSE events carry it as their id, so a client that reconnects
-- with `Last-Event-ID` is sent only what is newer. Not indexed: bumping it stays a HOT update.
alter table jobs
    add column revision integer not null default 1,
    -- where this job's terminal event is POSTed; the tenant's endpoint when null
    add column webhook_url text check (length(webhook_url) <= 2048);

-- The tenant's default endpoint. A 410 answer disables it (the receiver said "gone") until an
-- admin sets it again.
alter table tenants
    add column webhook_url text check (length(webhook_url) <= 2048),
    add column webhook_disabled_at timestamptz,
    add column webhook_disabled_reason text;

-- Signing secrets, sealed under TOLLGATE_SECRET_KEY (they must be read back to sign, so a hash
-- would not do). A rotation gives the old secret an `expires_at`; until then deliveries carry a
-- signature under each, so receivers can switch without dropping a message.
create table webhook_secrets (
    id         bigint generated always as identity primary key,
    tenant_id  uuid not null references tenants (id),
    sealed     bytea not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz
);
create index webhook_secrets_tenant on webhook_secrets (tenant_id, id desc);

-- One row per event to deliver, written in the same statement as the job's terminal status, so an
-- event can no more be lost than the outcome itself. The worker sends it; the id is the
-- `webhook-id` header, the same on every attempt (the receiver's dedupe key).
create table webhook_deliveries (
    id              uuid primary key,
    tenant_id       uuid not null references tenants (id),
    job_id          uuid not null references jobs (id) on delete cascade,
    event_type      text not null check (event_type in ('job.succeeded', 'job.failed', 'job.cancelled')),
    url             text not null,
    -- the tenant's endpoint (a 410 disables it) rather than the job's own URL
    tenant_endpoint boolean not null,
    -- the signed body, rendered at the first attempt and sent byte for byte on every retry
    payload         text,
    status          text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
    attempts        integer not null default 0,
    -- when the next attempt is due; while an attempt is under way, when its claim lapses
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    created_at      timestamptz not null default now(),
    finished_at     timestamptz
);
create index webhook_deliveries_job on webhook_deliveries (job_id);
-- the sweeper's scan for deliveries whose message was lost
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at) where status = 'pending';
-- the admins' listing by status (failed deliveries to look into and redeliver), newest first
create index webhook_deliveries_status on webhook_deliveries (status, created_at desc);

-- One row per POST: what the receiver answered (or why nothing was sent) and how long it took.
create table webhook_attempts (
    id           bigint generated always as identity primary key,
    delivery_id  uuid not null references webhook_deliveries (id) on delete cascade,
    attempted_at timestamptz not null,
    status_code  integer,
    latency_ms   integer not null check (latency_ms >= 0),
    error        text
);
create index webhook_attempts_delivery on webhook_attempts (delivery_id, id);
