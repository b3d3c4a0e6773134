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
