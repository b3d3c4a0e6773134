-- The response cache, and one provider call for identical jobs in flight (issue 37).
--
-- A stored answer is not a second copy: it is the job that answered, marked with how long its
-- answer serves identical requests (`cache_expires_at`). It lives in the jobs' day partitions, so
-- it ages out with them, keeps their `local_only` guarantees and never needs a second store; its
-- size is bounded by the time to live and the partition drops, never by deleting rows one by one.

-- Who may use it: an operator's `{"enabled", "ttl_secs", "sampled"}` on a tenant, and on a token
-- (which overrides its tenant's). Null: off (the tenant's, for a token).
alter table tenants add column cache jsonb;
alter table api_tokens add column cache jsonb;

-- What a hit is billed to the tenant per 1,000 tokens of the answer it replays (prompt and
-- completion alike); 0 unless the operator sets it.
alter table prices
    add column cache_hit_per_1k numeric(20, 10) not null default 0 check (cache_hit_per_1k >= 0);

-- On each job:
--   cache             what the cache did: `hit` (answered from a stored answer), `miss` (looked,
--                     found none, called the provider), `bypass` (the request opted out, or is
--                     sampled and its tenant caches only deterministic requests); null when its
--                     caller has no cache;
--   cache_key         the SHA-256 of its canonical request, route and tenant (a job that may read
--                     or write the cache);
--   cache_ttl_secs    how long its answer serves identical requests once it succeeds (null: not
--                     stored);
--   cache_expires_at  set when its answer is stored: until then it serves hits;
--   cache_waiting     an identical job is running: this one waits, queued, for its answer;
--   cache_source      a hit's: the job whose answer it replays;
--   cache_saved       a hit's: what the answer cost when it was called.
alter table jobs
    add column cache text check (cache in ('hit', 'miss', 'bypass')),
    add column cache_key bytea,
    add column cache_ttl_secs integer check (cache_ttl_secs > 0),
    add column cache_expires_at timestamptz,
    add column cache_waiting boolean not null default false,
    add column cache_source uuid,
    add column cache_saved numeric(24, 10);

create index jobs_cache_answers on jobs (tenant_id, cache_key, id) where cache_expires_at is not null;
create index jobs_cache_waiters on jobs (tenant_id, cache_key) where cache_waiting;

-- A hit's usage record: answered from the cache, at the price's cache rate, and what it saved.
alter table usage_records
    add column cache_hit boolean not null default false,
    add column saved_cost numeric(24, 10);
alter table usage_daily
    add column cache_hits bigint not null default 0,
    add column saved_cost numeric(24, 10) not null default 0;

-- The job calling the provider for a key: one row per tenant and key, taken when the job is
-- claimed, deleted by the statement that ends it. Identical jobs claimed meanwhile wait (queued,
-- `cache_waiting`) and are answered from its answer, or one of them runs if it fails.
create table cache_flights (
    tenant_id  uuid not null,
    key        bytea not null,
    job_id     uuid not null,
    started_at timestamptz not null default now(),
    primary key (tenant_id, key)
);

-- The job whose stored answer serves `p_key` of `p_tenant` now, the newest not older than the job
-- `p_since` (which also keeps the days before it out of the search), if any.
-- (PL/pgSQL, so that each session plans it once: a SQL function's query is planned at every call.)
create function tollgate_cache_answer(p_tenant uuid, p_key bytea, p_since uuid)
returns uuid
language plpgsql stable as $$
begin
    return (select j.id
              from jobs j
             where j.tenant_id = p_tenant and j.cache_key = p_key
               and j.cache_expires_at > now() and j.id >= p_since
             order by j.id desc
             limit 1);
end
$$;

-- What a claimed job with a cache key does (`p_since`: the oldest job id whose answer may serve
-- it): `hit` with the job whose stored answer serves it; `lead` when it is the one to call the
-- provider (it took the key's flight, or the flight's job ended without giving it up); `wait`
-- when an identical job is running: the job is put back `queued` and `cache_waiting`, its claim
-- undone (it was never run), to be answered when the leader ends; `lost` when its claim no
-- longer holds. The flight row is locked while the job is parked, so the statement ending the
-- leader (which deletes it) sees every waiter parked before it, and a job parking after it finds
-- the row gone and looks again (finding the answer, or leading).
create function tollgate_cache_lead(p_tenant uuid, p_key bytea, p_job uuid, p_claim uuid,
                                    p_since uuid)
returns table (verdict text, source uuid)
language plpgsql as $$
declare
    answered uuid;
    leader uuid;
begin
    loop
        answered := tollgate_cache_answer(p_tenant, p_key, p_since);
        if answered is not null then
            return query select 'hit'::text, answered;
            return;
        end if;
        insert into cache_flights (tenant_id, key, job_id) values (p_tenant, p_key, p_job)
            on conflict do nothing;
        if found then
            -- The insert may have waited for a leader's end that deleted its flight: its answer,
            -- committed with that end, is seen now.
            answered := tollgate_cache_answer(p_tenant, p_key, p_since);
            if answered is not null then
                delete from cache_flights
                 where tenant_id = p_tenant and key = p_key and job_id = p_job;
                return query select 'hit'::text, answered;
                return;
            end if;
            return query select 'lead'::text, null::uuid;
            return;
        end if;
        select f.job_id into leader
          from cache_flights f
         where f.tenant_id = p_tenant and f.key = p_key
           for update;
        if leader is null then
            continue;
        end if;
        if leader = p_job
           or not exists (select 1 from jobs l
                           where l.id = leader and l.status in ('queued', 'running', 'retrying'))
        then
            update cache_flights set job_id = p_job, started_at = now()
             where tenant_id = p_tenant and key = p_key;
            return query select 'lead'::text, null::uuid;
            return;
        end if;
        update jobs
           set status = 'queued', cache_waiting = true, claim_id = null,
               claims = claims - 1, lease_expires_at = null
         where id = p_job and claim_id = p_claim and status = 'running';
        if found then
            return query select 'wait'::text, null::uuid;
        else
            return query select 'lost'::text, null::uuid;
        end if;
        return;
    end loop;
end
$$;
