-- Foundation schema: tenants, their API tokens, jobs and one row per provider call.
-- Statuses and kinds are text with check constraints rather than Postgres enums, so that later
-- migrations can add a value without `alter type` (which cannot run inside a transaction on PG 15).

-- A tenant is the customer every job, token and cent belongs to.
create table tenants (
    id          uuid primary key,
    name        text not null unique check (length(name) between 1 and 100),
    created_at  timestamptz not null default now(),
    disabled_at timestamptz
);

-- API tokens are random 32-byte secrets; only their SHA-256 is kept. `prefix` is the first
-- characters of the token, shown in listings so an operator can tell tokens apart.
create table api_tokens (
    id           uuid primary key,
    tenant_id    uuid not null references tenants (id),
    name         text not null,
    role         text not null check (role in ('admin', 'client')),
    token_hash   bytea not null unique check (length(token_hash) = 32),
    prefix       text not null,
    created_at   timestamptz not null default now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
create index api_tokens_tenant on api_tokens (tenant_id);

-- One row per submitted job. The id is a UUIDv7, so ordering by id is ordering by creation time.
-- A RabbitMQ message carries only this id; everything the worker needs is here.
create table jobs (
    id                uuid primary key,
    tenant_id         uuid not null references tenants (id),
    token_id          uuid references api_tokens (id),
    kind              text not null check (kind in ('generate', 'chat', 'embedding')),
    status            text not null check (status in
                          ('pending', 'queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    model             text not null,
    request           jsonb not null,
    result            jsonb,
    error_code        text,
    error_message     text,
    provider          text,
    upstream_model    text,
    -- how many times a worker has claimed the job (a claim is one worker run, which may make
    -- several provider calls once retries exist; each call is a row in job_attempts)
    attempts          integer not null default 0,
    prompt_tokens     integer,
    completion_tokens integer,
    total_tokens      integer,
    metadata          jsonb,
    -- the claim of the worker currently running the job: only that claim may finish it, so a
    -- worker that lost its claim (its message was redelivered elsewhere) cannot overwrite the outcome
    claim_id          uuid,
    -- when a running job is presumed abandoned (its worker died and the message was lost)
    lease_expires_at  timestamptz,
    -- set once the broker confirmed the job's message; null rows older than a few seconds are
    -- what the sweeper republishes (the api may have crashed between commit and publish)
    published_at      timestamptz,
    created_at        timestamptz not null default now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null))
) with (fillfactor = 90); -- room on each page for the HOT updates a job goes through
-- GET /v1/jobs: a tenant's jobs newest first. Filtering by a common or recent status (queued,
-- running, succeeded) walks this index and finds a page quickly.
create index jobs_tenant_id on jobs (tenant_id, id desc);
-- Failed and cancelled jobs are rare and can be old, so they get an index of their own. It is
-- partial on purpose: a job that succeeds never enters it, so the hot path (insert, claim,
-- finish) maintains one index fewer, worth ~5% of intake and end-to-end throughput (bench/).
create index jobs_tenant_unsuccessful on jobs (tenant_id, status, id desc)
    where status in ('failed', 'cancelled');
-- The sweeper's two scans stay small: only rows that need it are in these partial indexes.
-- `published_at` is deliberately in no index (nor index predicate), so marking a job published is
-- a HOT update that touches no index; the sweeper filters it on the few queued rows instead.
create index jobs_queued on jobs (created_at) where status = 'queued';
create index jobs_running_lease on jobs (lease_expires_at) where status = 'running';

-- One row per provider call: which provider and model, how long it took, what it cost in tokens
-- and how it ended. Written in the same statement that records the job's outcome.
create table job_attempts (
    id                bigint generated always as identity primary key,
    job_id            uuid not null references jobs (id) on delete cascade,
    claim             integer not null,
    provider          text not null,
    upstream_model    text not null,
    started_at        timestamptz not null,
    latency_ms        integer not null check (latency_ms >= 0),
    status_code       integer,
    outcome           text not null check (outcome in ('succeeded', 'transient_error', 'permanent_error')),
    error_code        text,
    error_message     text,
    prompt_tokens     integer,
    completion_tokens integer
);
create index job_attempts_job on job_attempts (job_id, id);
