-- SQL that several statements share, written once here; sqlx checks every statement that uses it
-- against it (a column renamed under a view fails the build where the view is read).

-- Where an ended job's or batch's webhook goes, if anywhere: the URL it was given, else its
-- tenant's endpoint while that is enabled (`tenant_endpoint` says which, since a 410 from the
-- tenant's endpoint disables it). No row: nowhere. Used by every statement that ends jobs (a
-- worker's run, a cancel, a dead letter) and by the one that ends batches; a plain SQL function,
-- so the planner inlines it into each.
create function tollgate_webhook_target(tenant uuid, own_url text)
    returns table (url text, tenant_endpoint boolean)
    language sql stable
as $$
    select coalesce(own_url, t.webhook_url), own_url is null
      from tenants t
     where t.id = tenant
       and (own_url is not null or (t.webhook_url is not null and t.webhook_disabled_at is null))
$$;

-- A batch with its items counted by status and summed (tokens, cost), and when its results expire:
-- what `GET /v1/batches/{id}` and the listings show. The counts are read when the view is (a
-- lateral join over the batch's items, through `jobs_batch_items`), so a filter on the batch's own
-- columns is applied first.
create view batch_progress as
select b.id, b.tenant_id, b.kind, b.model, b.status, b.metadata, b.webhook_url, b.created_at,
       b.cancelled_at, b.finished_at, b.openai_endpoint, b.input_file_id, c.total, c.pending,
       c.queued, c.running, c.succeeded, c.failed, c.cancelled, c.prompt_tokens,
       c.completion_tokens, c.cost,
       (select (date_trunc('day', b.created_at at time zone 'utc')
                + make_interval(days => s.job_retention_days + 1)) at time zone 'utc'
          from settings s) as results_expire_at
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
              coalesce(sum(j.cost), 0) as cost
         from jobs j where j.batch_id = b.id) c;
