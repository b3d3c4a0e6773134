-- Billing: prices with history, one usage record per finished job, daily rollups for the usage
-- endpoints and the operator's spend, and monthly quotas with reservations.
-- Money is `numeric` throughout: exact decimals, never floats.

-- A price per provider and upstream model, per 1,000 tokens. Rows are never updated: a new price is
-- a new row with a later `effective_from`, so history is kept and a job is priced by the row in
-- force when it finished.
create table prices (
    id             bigint generated always as identity primary key,
    provider       text not null check (provider in ('ollama', 'openai')),
    model          text not null check (length(model) between 1 and 200),
    input_per_1k   numeric(20, 10) not null check (input_per_1k >= 0),
    output_per_1k  numeric(20, 10) not null check (output_per_1k >= 0),
    effective_from timestamptz not null default now(),
    created_at     timestamptz not null default now(),
    unique (provider, model, effective_from)
);
insert into prices (provider, model, input_per_1k, output_per_1k, effective_from) values
    ('ollama', 'llama3', 0.002, 0.002, '2000-01-01'),
    ('ollama', 'mistral', 0.0015, 0.0015, '2000-01-01'),
    ('ollama', 'nomic-embed-text', 0.0001, 0, '2000-01-01'),
    -- OpenAI's published prices per 1M tokens, divided by 1,000
    ('openai', 'gpt-4.1-mini', 0.0004, 0.0016, '2000-01-01'),
    ('openai', 'gpt-4.1', 0.002, 0.008, '2000-01-01'),
    ('openai', 'gpt-4o-mini', 0.00015, 0.0006, '2000-01-01'),
    ('openai', 'text-embedding-3-small', 0.00002, 0, '2000-01-01');

-- The request's origin and client address (the seed's log fields), kept with the job for billing.
alter table jobs
    add column origin text,
    add column client_ip inet,
    -- tokens and cost reserved against the tenant's monthly quota at admission, released or
    -- settled when the job ends; null when the tenant has no quota
    add column reserved_tokens bigint,
    add column reserved_cost numeric(20, 10),
    add column reserved_month date,
    -- the charge, beside the token counts already on the row
    add column cost numeric(20, 10),
    add column usage_estimated boolean,
    add column unpriced boolean;

-- What a finished job is billed: one row per job (the primary key makes a second bill impossible),
-- written in the same statement as the job's terminal status.
-- Only `job_id` is a foreign key: the tenant and token are the job's (checked when it was accepted)
-- and prices are never deleted, so further checks would only repeat them, a trigger query per job.
create table usage_records (
    job_id            uuid primary key references jobs (id) on delete cascade,
    tenant_id         uuid not null,
    token_id          uuid,
    model             text not null,
    provider          text not null,
    upstream_model    text not null,
    prompt_tokens     integer not null,
    completion_tokens integer not null,
    -- true when the provider reported no counts and they were estimated with a tokenizer
    estimated         boolean not null,
    price_id          bigint,
    -- null exactly when no price was in force: never billed as 0 silently
    cost              numeric(20, 10),
    latency_ms        integer,
    origin            text,
    client_ip         inet,
    finished_at       timestamptz not null,
    check ((price_id is null) = (cost is null))
);
-- The admin's list of unpriced usage stays small and quick.
create index usage_records_unpriced on usage_records (provider, upstream_model) where cost is null;

-- Per tenant, UTC day and model: what the usage endpoints read, maintained in the same statement
-- as each usage record, so they never scan the records. Each (tenant, day, model) is spread over
-- up to 32 `shard` rows, picked at random by each finishing job: with one row, every worker
-- finishing a job of a busy tenant would queue on its lock (measured: half the throughput);
-- readers sum the shards.
create table usage_daily (
    tenant_id         uuid not null,
    day               date not null,
    model             text not null,
    shard             smallint not null default 0,
    requests          bigint not null default 0,
    prompt_tokens     bigint not null default 0,
    completion_tokens bigint not null default 0,
    cost              numeric(24, 10) not null default 0,
    unpriced_requests bigint not null default 0,
    primary key (tenant_id, day, model, shard)
);

-- What the gateway paid per UTC day, provider and upstream model, failed calls included: every
-- attempt that reported tokens, priced when its run ended. Sharded like `usage_daily`.
create table provider_spend_daily (
    day               date not null,
    provider          text not null,
    upstream_model    text not null,
    shard             smallint not null default 0,
    calls             bigint not null default 0,
    prompt_tokens     bigint not null default 0,
    completion_tokens bigint not null default 0,
    cost              numeric(24, 10) not null default 0,
    unpriced_calls    bigint not null default 0,
    primary key (day, provider, upstream_model, shard)
);

-- A tenant's monthly limits (null: none).
alter table tenants
    add column monthly_cost_budget numeric(20, 10) check (monthly_cost_budget >= 0),
    add column monthly_token_quota bigint check (monthly_token_quota >= 0);

-- Per tenant and month: what is reserved by admitted jobs still running, and what finished jobs
-- used. Admission checks and reserves in one conditional upsert on this row, so concurrent bursts
-- across api instances cannot overshoot by more than what was already admitted.
create table quota_months (
    tenant_id       uuid not null references tenants (id),
    month           date not null,
    reserved_tokens bigint not null default 0,
    reserved_cost   numeric(24, 10) not null default 0,
    used_tokens     bigint not null default 0,
    used_cost       numeric(24, 10) not null default 0,
    primary key (tenant_id, month)
);

-- What each call cost at the price in force when its run ended (null: unpriced or no tokens).
alter table job_attempts add column cost numeric(20, 10);
