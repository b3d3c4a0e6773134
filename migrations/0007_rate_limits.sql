-- Rate limits: requests per minute with a burst, per token and per tenant (all its tokens
-- together); null is unlimited. Enforced in memory by every api instance, each taking an equal
-- share, so that together they never admit more than the limit.
alter table tenants
    add column rate_limit_per_minute integer check (rate_limit_per_minute > 0),
    add column rate_limit_burst integer check (rate_limit_burst > 0);
alter table api_tokens
    add column rate_limit_per_minute integer check (rate_limit_per_minute > 0),
    add column rate_limit_burst integer check (rate_limit_burst > 0);

-- The api instances alive, each refreshing its row every second: how many share a limit.
create table api_instances (
    id      uuid primary key,
    seen_at timestamptz not null default now()
);
