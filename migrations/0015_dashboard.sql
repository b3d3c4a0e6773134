-- What the dashboard's overview shows that no single process knows.

-- Activity per minute, summed across every api instance and worker: each adds what it counted
-- since its last report every few seconds (one upsert per process, never one per request or job),
-- so the overview reads at most 60 rows however busy the gateway is. Rows older than a day go.
create table activity_minutes (
    minute          timestamptz primary key,
    requests        bigint not null default 0,
    jobs_accepted   bigint not null default 0,
    jobs_succeeded  bigint not null default 0,
    jobs_failed     bigint not null default 0
);

-- Each worker's view of its providers: circuits and calls in flight live in the worker's memory,
-- so every worker writes them here every few seconds. A worker leaves at shutdown; a row not seen
-- for a while is a worker that died.
create table worker_health (
    id          uuid primary key,
    seen_at     timestamptz not null,
    -- [{"provider", "host", "circuit_open", "slots", "in_flight"}]
    providers   jsonb not null
);

-- Every tenant's usage over a span (the dashboard's usage page and overview, `tenant_id=all`):
-- without it a month's sums read the whole rollup. The rollup's upserts change only its sums, so
-- they stay HOT updates; the index grows by a row only when a tenant's day and model first appear.
create index usage_daily_day on usage_daily (day);
