-- Batches: many items of one kind and model submitted at once (an SEO description per product).
-- Each item is a job with the batch's id and the client's `custom_id`; it waits as `pending` until
-- a dispatcher in the worker releases it to the bulk queue, fairly across tenants and batches.
create table batches (
    id           uuid primary key,
    tenant_id    uuid not null references tenants (id),
    token_id     uuid references api_tokens (id),
    kind         text not null check (kind in ('generate', 'chat', 'embedding')),
    model        text not null,
    -- in_progress until every item has ended; a cancel makes it cancelling (pending items are
    -- cancelled at once, running ones finish) and then cancelled
    status       text not null
                 check (status in ('in_progress', 'cancelling', 'completed', 'cancelled')),
    item_count   integer not null check (item_count > 0),
    metadata     jsonb,
    -- where `batch.completed` is POSTed; else the tenant's endpoint
    webhook_url  text,
    -- bumped at each change a watcher should see (the id of its SSE events)
    revision     integer not null default 0,
    created_at   timestamptz not null default now(),
    cancelled_at timestamptz,
    finished_at  timestamptz,
    check ((status in ('completed', 'cancelled')) = (finished_at is not null))
);
create index batches_tenant on batches (tenant_id, id desc);
-- What the dispatcher walks each round: the batches with items still to release or finish.
create index batches_open on batches (id) where finished_at is null;

alter table jobs
    add column batch_id    uuid references batches (id),
    add column custom_id   text,
    -- when the dispatcher released the item to the bulk queue (the sweeper republishes from then)
    add column released_at timestamptz;
-- A batch's items in submission order (results, counts); a single job never enters it.
create index jobs_batch_items on jobs (batch_id, id) where batch_id is not null;
-- The items a dispatcher may release next, oldest first in each batch.
create index jobs_batch_pending on jobs (batch_id, id) where status = 'pending';
-- Released items no worker has claimed yet: the depth of the bulk queue, which the dispatcher
-- keeps no deeper than the workers can use.
create index jobs_batch_released on jobs (batch_id) where batch_id is not null and status = 'queued';
-- Items still to end: a batch with none left is over.
create index jobs_batch_unfinished on jobs (batch_id) where batch_id is not null and finished_at is null;

-- Idempotency-Key (Stripe's semantics): the first answer to a POST is kept for a day and replayed
-- to a retry with the same key and body; the same key with another body is refused.
create table idempotency_keys (
    tenant_id    uuid not null references tenants (id),
    key          text not null,
    -- SHA-256 of the method, path and body the key was first used with
    request_hash bytea not null,
    status_code  smallint not null,
    location     text,
    response     jsonb not null,
    created_at   timestamptz not null default now(),
    primary key (tenant_id, key)
);
create index idempotency_keys_created on idempotency_keys (created_at);

-- A batch announces its end (`batch.completed`, `batch.cancelled`) as one delivery; its items
-- send none of their own. A delivery is about a job or about a batch.
alter table webhook_deliveries
    alter column job_id drop not null,
    add column batch_id uuid references batches (id) on delete cascade,
    add constraint webhook_deliveries_subject check (num_nonnulls(job_id, batch_id) = 1),
    drop constraint webhook_deliveries_event_type_check,
    add constraint webhook_deliveries_event_type_check check (event_type in
        ('job.succeeded', 'job.failed', 'job.cancelled', 'batch.completed', 'batch.cancelled'));
