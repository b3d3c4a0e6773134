-- Providers become a registry of named upstreams: the local fleet (`local`, the one provider of
-- kind `fleet`) and cloud accounts of kind `openai` or `openai_compatible` (Groq, Together,
-- Mistral, DeepSeek, OpenRouter, Azure OpenAI, a second OpenAI account). Today's OpenAI account
-- becomes the provider `openai`, seeded from the settings row, and the fleet, called `ollama` on
-- jobs, attempts, routes and prices until now, is called `local` there too — the name the settings
-- always gave it. Every `provider` column holds a provider's name; routes and prices reference
-- the registry, history (jobs, attempts, usage, spend) keeps the name it was written with.

create table providers (
    name                      text primary key check (name ~ '^[a-z][a-z0-9_-]{0,39}$'),
    -- `anthropic` is reserved for the Anthropic upstream (not accepted yet)
    kind                      text not null check (kind in ('fleet', 'openai', 'openai_compatible')),
    -- null for the fleet (its hosts have addresses)
    base_url                  text,
    -- Azure OpenAI: sent as `?api-version=` on every call
    api_version               text check (length(api_version) between 1 and 40),
    -- how the key is sent: `Authorization: Bearer` or Azure's `api-key` header
    key_header                text not null default 'authorization'
                                  check (key_header in ('authorization', 'api-key')),
    -- nonce || ciphertext under TOLLGATE_SECRET_KEY (purpose: provider key), last four in clear
    api_key_sealed            bytea,
    api_key_last4             text,
    -- calls in flight per worker (the fleet's limit is its hosts' slots)
    max_concurrency           integer not null default 256 check (max_concurrency between 1 and 10000),
    -- null: the worker's PROVIDER_TIMEOUT_SECS / the settings' circuit policy
    timeout_ms                integer check (timeout_ms between 100 and 3600000),
    circuit_failure_threshold integer check (circuit_failure_threshold between 1 and 1000),
    circuit_cooldown_ms       integer check (circuit_cooldown_ms between 100 and 3600000),
    enabled                   boolean not null default true,
    created_at                timestamptz not null default now(),
    updated_at                timestamptz not null default now(),
    check ((api_key_sealed is null) = (api_key_last4 is null)),
    check ((kind = 'fleet') = (base_url is null)),
    check (kind <> 'fleet' or (api_key_sealed is null and api_version is null)),
    check ((kind = 'fleet') = (name = 'local'))
);

comment on table providers is 'Named upstreams: the local fleet (`local`) and cloud accounts';
comment on column providers.kind is 'fleet (the hosts), openai, or openai_compatible (its own base URL; Azure via api_version and key_header)';

insert into providers (name, kind) values ('local', 'fleet');
insert into providers (name, kind, base_url, api_key_sealed, api_key_last4, max_concurrency)
select 'openai', 'openai', openai_base_url, openai_api_key_sealed, openai_api_key_last4,
       openai_max_concurrency
  from settings;

alter table settings
    drop column openai_api_key_sealed,
    drop column openai_api_key_last4,
    drop column openai_base_url,
    drop column openai_max_concurrency,
    drop constraint settings_ai_provider_check,
    drop constraint settings_ai_fallback_provider_check,
    -- under `hybrid`, the cloud side
    add column ai_hybrid_cloud text not null default 'openai' references providers (name),
    add check (ai_hybrid_cloud <> 'local');
-- `ai_provider` and `ai_fallback_provider` name a provider (or `hybrid`, `none`); the api checks
-- them against the registry, which may not drop a provider they name.

-- The fleet's name everywhere it was written.
alter table model_routes
    drop constraint model_routes_provider_check,
    drop constraint model_routes_check;
update model_routes set provider = 'local' where provider = 'ollama';
alter table model_routes
    add check ((provider = 'local') = (host_kind is not null)),
    add foreign key (provider) references providers (name) on update cascade;

alter table prices drop constraint prices_provider_check;
update prices set provider = 'local' where provider = 'ollama';
alter table prices add foreign key (provider) references providers (name) on delete cascade;

update jobs set provider = 'local' where provider = 'ollama';
update job_attempts set provider = 'local' where provider = 'ollama';
update usage_records set provider = 'local' where provider = 'ollama';
update provider_spend_daily set provider = 'local' where provider = 'ollama';

-- A model's own ordered chain of providers, overriding `ai_provider` / `ai_fallback_provider`
-- (and `hybrid`) for it.
create table model_chains (
    model     text primary key check (length(model) between 1 and 200),
    providers text[] not null check (cardinality(providers) between 1 and 8)
);
comment on table model_chains is 'A model''s own ordered chain of providers, overriding the settings';
