-- The parts of a call's tokens that providers report besides the counts: completion tokens spent
-- reasoning (OpenAI's `completion_tokens_details.reasoning_tokens`; Ollama's thinking, estimated
-- from its text) and prompt tokens read from the provider's cache
-- (`prompt_tokens_details.cached_tokens`). Each is a part of its count, never added to it: a
-- reasoning model's completion count already holds its reasoning. Kept on the job, each attempt,
-- the usage record and both daily rollups, so the usage endpoints show them without a scan. A row
-- written before this migration reads as 0 of each.
alter table jobs
    add column reasoning_tokens integer,
    add column cached_tokens integer;

alter table job_attempts
    add column reasoning_tokens integer,
    add column cached_tokens integer;

alter table usage_records
    add column reasoning_tokens integer not null default 0,
    add column cached_tokens integer not null default 0;

alter table usage_daily
    add column reasoning_tokens bigint not null default 0,
    add column cached_tokens bigint not null default 0;

alter table provider_spend_daily
    add column reasoning_tokens bigint not null default 0,
    add column cached_tokens bigint not null default 0;

-- What a cached prompt token costs, per 1,000, when the provider bills it apart (OpenAI's cached
-- input rate). Null: a cached token costs what any prompt token does.
alter table prices
    add column cached_input_per_1k numeric(20, 10) check (cached_input_per_1k >= 0);

comment on column usage_records.reasoning_tokens is 'Of completion_tokens, those the model spent reasoning';
comment on column usage_records.cached_tokens is 'Of prompt_tokens, those read from the provider''s cache (priced at the cached rate when the price has one)';

-- A batch's progress sums its items' reasoning and cached tokens too (the view of migration 0017,
-- its two new columns at the end).
create or replace view batch_progress as
select b.id, b.tenant_id, b.kind, b.model, b.status, b.metadata, b.webhook_url, b.created_at,
       b.cancelled_at, b.finished_at, b.openai_endpoint, b.input_file_id, c.total, c.pending,
       c.queued, c.running, c.succeeded, c.failed, c.cancelled, c.prompt_tokens,
       c.completion_tokens, c.cost,
       (select (date_trunc('day', b.created_at at time zone 'utc')
                + make_interval(days => s.job_retention_days + 1)) at time zone 'utc'
          from settings s) as results_expire_at,
       c.reasoning_tokens, c.cached_tokens
  from batches b
 cross join lateral (
       select count(*) as total,
              count(*) filter (where j.status = 'pending') as pending,
              count(*) filter (where j.status = 'queued') as queued,
              count(*) filter (where j.status in ('running', 'retrying')) as running,
              count(*) filter (where j.status = 'succeeded') as succeeded,
              count(*) filter (where j.status = 'failed') as failed,
              count(*) filter (where j.status = 'cancelled') as cancelled,
              coalesce(sum(j.prompt_tokens), 0)::bigint as prompt_tokens,
              coalesce(sum(j.completion_tokens), 0)::bigint as completion_tokens,
              coalesce(sum(j.cost), 0) as cost,
              coalesce(sum(j.reasoning_tokens), 0)::bigint as reasoning_tokens,
              coalesce(sum(j.cached_tokens), 0)::bigint as cached_tokens
         from jobs j where j.batch_id = b.id) c;
