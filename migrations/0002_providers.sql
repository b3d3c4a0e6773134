-- Provider resolution: runtime settings, model routes, retries through delay queues, dead letters.

-- The operator's runtime settings: one row, changed through `PATCH /v1/admin/settings` and read by
-- every process every second. `version` grows on every change (of this row or of a model route),
-- so a process can tell that what it holds is stale.
create table settings (
    id                        boolean primary key default true check (id),
    version                   bigint not null default 1,
    ai_provider               text not null default 'local' check (ai_provider in ('openai', 'local')),
    ai_fallback_provider      text not null default 'none'
                                  check (ai_fallback_provider in ('openai', 'local', 'none')),
    ai_local_enabled          boolean not null default true,
    -- nonce || ciphertext of the OpenAI key (XChaCha20-Poly1305 under TOLLGATE_SECRET_KEY); the
    -- last four characters are kept in clear so an operator can tell which key is set.
    openai_api_key_sealed     bytea,
    openai_api_key_last4      text,
    ollama_base_url           text not null default 'http://127.0.0.1:11434',
    openai_base_url           text not null default 'https://api.openai.com/v1',
    -- calls to one provider for one job run: the first and its quick retries
    provider_attempts         integer not null default 3 check (provider_attempts between 1 and 10),
    retry_min_delay_ms        integer not null default 200 check (retry_min_delay_ms between 1 and 60000),
    retry_max_delay_ms        integer not null default 5000 check (retry_max_delay_ms between 1 and 60000),
    -- runs of one job through the delay queues before it fails with its last error
    max_job_attempts          integer not null default 5 check (max_job_attempts between 1 and 50),
    circuit_failure_threshold integer not null default 5 check (circuit_failure_threshold between 1 and 1000),
    circuit_cooldown_ms       integer not null default 30000 check (circuit_cooldown_ms between 100 and 3600000),
    ollama_max_concurrency    integer not null default 4 check (ollama_max_concurrency between 1 and 10000),
    openai_max_concurrency    integer not null default 256 check (openai_max_concurrency between 1 and 10000),
    -- set once a process copied its environment's values in (first start); later starts leave the
    -- operator's choices alone
    seeded_at                 timestamptz,
    updated_at                timestamptz not null default now(),
    check (retry_min_delay_ms <= retry_max_delay_ms)
);
insert into settings default values;

-- Which upstream model each provider runs for a model name clients use. A name with no route is
-- refused at intake; a provider with no route for a name is skipped when resolving it, so a
-- fallback from Ollama to OpenAI sends a model OpenAI has.
create table model_routes (
    model          text not null check (length(model) between 1 and 200),
    provider       text not null check (provider in ('ollama', 'openai')),
    upstream_model text not null check (length(upstream_model) between 1 and 200),
    primary key (model, provider)
);
insert into model_routes (model, provider, upstream_model) values
    ('llama3', 'ollama', 'llama3'),
    ('llama3', 'openai', 'gpt-4.1-mini'),
    ('mistral', 'ollama', 'mistral'),
    ('mistral', 'openai', 'gpt-4o-mini'),
    ('nomic-embed-text', 'ollama', 'nomic-embed-text'),
    ('nomic-embed-text', 'openai', 'text-embedding-3-small'),
    ('gpt-4.1-mini', 'openai', 'gpt-4.1-mini'),
    ('gpt-4.1', 'openai', 'gpt-4.1'),
    ('gpt-4o-mini', 'openai', 'gpt-4o-mini'),
    ('text-embedding-3-small', 'openai', 'text-embedding-3-small');

-- `attempts` now counts provider calls (what clients read as a job's attempts); the old counter of
-- worker runs keeps its meaning under its own name.
alter table jobs rename column attempts to claims;
alter table jobs
    add column attempts integer not null default 0,
    -- runs that ended with every provider failing transiently and the job parked in a delay queue
    add column retries integer not null default 0,
    -- when a `retrying` job is due; its message waits in the delay queue until then
    add column retry_at timestamptz,
    -- set when the broker dead-lettered the job's message (poison), for admins to list and requeue
    add column dead_lettered_at timestamptz;
-- The sweeper republishes `retrying` jobs whose delayed message was never confirmed or is overdue.
create index jobs_retrying on jobs (retry_at) where status = 'retrying';
-- `GET /v1/admin/dead-letters`, newest first.
create index jobs_dead_lettered on jobs (dead_lettered_at desc) where dead_lettered_at is not null;

-- An attempt's end, beside its start and latency.
alter table job_attempts add column finished_at timestamptz;
