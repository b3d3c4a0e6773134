-- The fleet holds two kinds of local host: Ollama, and servers that speak the OpenAI API (vLLM,
-- llama.cpp's server, SGLang, TGI, LM Studio). Both hold their slots across workers and serve
-- `local_only` tenants alike; only how a call is written differs. A route says which upstream model
-- each kind of host runs for a model name, since the two name one model differently
-- (`qwen3:32b` on Ollama, `Qwen/Qwen3-32B` on vLLM).

alter table ollama_hosts rename to hosts;
alter table hosts rename constraint ollama_hosts_name_key to hosts_name_key;
alter index ollama_hosts_pkey rename to hosts_pkey;

alter table hosts
    add column kind text not null default 'ollama' check (kind in ('ollama', 'openai_compatible')),
    -- An OpenAI-compatible server's key, sealed like the OpenAI key (null: it takes none).
    add column api_key_sealed bytea,
    add column api_key_last4 text,
    add check ((api_key_sealed is null) = (api_key_last4 is null)),
    add check (kind = 'openai_compatible' or api_key_sealed is null);
alter table hosts alter column kind drop default;

comment on table hosts is 'The local fleet: Ollama hosts and OpenAI-compatible servers, with their slots';
comment on column hosts.kind is 'How calls are written to it: ollama (its own API) or openai_compatible';

-- A fleet route (provider `ollama`, the fleet) names the kind of host its upstream model is for;
-- a cloud route names none. Every fleet route until now was for Ollama hosts.
alter table model_routes
    add column host_kind text check (host_kind in ('ollama', 'openai_compatible'));
update model_routes set host_kind = 'ollama' where provider = 'ollama';
alter table model_routes
    drop constraint model_routes_pkey,
    add constraint model_routes_key unique nulls not distinct (model, provider, host_kind),
    add check ((provider = 'ollama') = (host_kind is not null));

comment on column model_routes.host_kind is 'For the fleet: the kind of host the upstream model is for (null for the cloud)';
