-- Anthropic's Messages API as an upstream (issue 36).
--
-- A cloud account may be of kind `anthropic`.
alter table providers
    drop constraint providers_kind_check,
    add constraint providers_kind_check
        check (kind in ('fleet', 'openai', 'openai_compatible', 'anthropic'));

-- Prompt tokens written to the provider's cache (Anthropic's `cache_creation_input_tokens`): a
-- part of the prompt's count, as cached tokens are, priced at the price's cache-write rate when
-- it has one. Kept on the job, each attempt and the usage record; a row written before this
-- migration reads as 0.
alter table jobs add column cache_write_tokens integer;
alter table job_attempts add column cache_write_tokens integer;
alter table usage_records add column cache_write_tokens integer not null default 0;

-- What a prompt token written to the provider's cache costs, per 1,000 (Anthropic bills it at
-- 1.25 times its input rate for five minutes' caching). Null: what any prompt token costs.
alter table prices
    add column cache_write_input_per_1k numeric(20, 10) check (cache_write_input_per_1k >= 0);

comment on column usage_records.cache_write_tokens is 'Of prompt_tokens, those written to the provider''s cache (priced at the cache-write rate when the price has one)';

-- The provider's own error body, as it answered a failed call: a client of the provider's
-- dialect (Anthropic's, whose retry logic reads its wording) is answered with it unchanged. On
-- each attempt, and on a failed job (its last attempt's).
alter table job_attempts add column error_body jsonb;
alter table jobs add column error_body jsonb;

-- The most an answer may run to on a route when the client gave no `max_tokens` (Anthropic
-- requires one: 4,096 when the route sets none). Null: the provider's own default.
alter table model_routes
    add column default_max_tokens integer check (default_max_tokens between 1 and 1000000);

comment on column model_routes.default_max_tokens is 'max_tokens sent when the client gave none (null: the provider''s default)';
