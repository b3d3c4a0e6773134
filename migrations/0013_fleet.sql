-- Local capacity as a fleet of Ollama hosts whose call slots hold across every worker; hybrid
-- routing (local first, overflow to the cloud, or a fixed share); tenants whose data never leaves
-- the fleet; and why each job went where it went.

-- The Ollama hosts, changed at run time through `/v1/admin/hosts` (every change bumps the
-- settings version, so every process reloads them with the settings). `slots` is how many calls
-- the host serves well at once, whichever workers make them; batch items may hold `bulk_slots` of
-- them, the rest stay for single jobs.
create table ollama_hosts (
    id          uuid primary key,
    name        text not null unique check (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    base_url    text not null,
    slots       integer not null check (slots between 1 and 10000),
    bulk_slots  integer not null check (bulk_slots between 1 and slots),
    enabled     boolean not null default true,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

-- One row per call slot of a host: a worker calls the host only while it holds one. A held slot
-- names the call holding it and is good until `held_until`; the holder's worker extends it while
-- the call runs, so a worker that dies gives its slots back when their lease runs out. Rows above
-- a host's `slots` (after it shrank) are never handed out.
create table host_slots (
    host_id     uuid not null references ollama_hosts (id) on delete cascade,
    slot        integer not null,
    holder      uuid,
    held_until  timestamptz,
    primary key (host_id, slot),
    check ((holder is null) = (held_until is null))
);
create index host_slots_holder on host_slots (holder) where holder is not null;

-- The single Ollama URL of earlier versions becomes the fleet's first host, with its concurrency
-- as slots (it was per worker; now it holds across them).
insert into ollama_hosts (id, name, base_url, slots, bulk_slots)
select gen_random_uuid(), 'default', ollama_base_url, ollama_max_concurrency,
       greatest(1, ollama_max_concurrency
                   - case when ollama_max_concurrency >= 2
                          then (ollama_max_concurrency + 3) / 4 else 0 end)
  from settings;
insert into host_slots (host_id, slot)
select h.id, s from ollama_hosts h, generate_series(1, h.slots) s;

alter table settings
    drop column ollama_base_url,
    drop column ollama_max_concurrency,
    drop constraint settings_ai_provider_check,
    add constraint settings_ai_provider_check check (ai_provider in ('openai', 'local', 'hybrid')),
    -- hybrid: how long a job may wait for a local slot before it overflows to the cloud
    add column ai_overflow_wait_ms integer not null default 1000
        check (ai_overflow_wait_ms between 0 and 600000),
    -- hybrid: a fixed share of jobs (percent) sent to the fleet instead of overflow; null: overflow
    add column ai_local_share integer check (ai_local_share between 0 and 100);

-- `local_only`: the tenant's (or token's) jobs never go to a cloud provider. A token's null
-- inherits its tenant's. `batch_overflow`: the tenant's batch items may overflow to the cloud
-- under hybrid routing (bulk work is where local capacity saves the most).
alter table tenants
    add column data_policy text not null default 'any' check (data_policy in ('any', 'local_only')),
    add column batch_overflow boolean not null default false;
alter table api_tokens
    add column data_policy text check (data_policy in ('any', 'local_only'));

-- Why the job went where it went, and the data policy its run honoured.
alter table jobs
    add column route_reason text check (route_reason in ('active', 'fallback', 'overflow', 'share')),
    add column data_policy text check (data_policy in ('any', 'local_only'));
alter table job_attempts add column host text;
alter table usage_records add column route_reason text;

-- Usage per route reason from the rollup: what the fleet served and what overflowed. Days rolled
-- up before reasons were recorded show `unrecorded`.
alter table usage_daily add column route_reason text not null default 'unrecorded';
alter table usage_daily drop constraint usage_daily_pkey,
    add primary key (tenant_id, day, model, route_reason, shard);
alter table usage_daily alter column route_reason drop default;
