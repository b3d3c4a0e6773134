-- Data that ages out. Jobs (with their prompts and results) are kept `job_retention_days`, usage
-- records `usage_retention_days`; the daily rollups are kept. Expiry is never a `delete` that scans
-- and bloats: the big tables are partitioned by the time in their UUIDv7 ids, and what expires is
-- dropped a whole partition at a time by the worker's sweeper (`tollgate-worker expire` does the
-- same once, see `shared/src/db/partitions.rs`).
--
--   jobs           by `id`, one partition per UTC day;
--   job_attempts   by `job_id`, the same days (dropped with their jobs);
--   usage_records  by `job_id`, one partition per UTC month (billing disputes outlive jobs).
--
-- Each has a default partition for ids outside the days prepared (the sweeper prepares a week
-- ahead), so an insert never fails for want of one. Rows already there stay in a `_legacy`
-- partition that ends where the first day begins, and ages out like a day.

alter table settings
    add column job_retention_days integer not null default 30
        check (job_retention_days between 1 and 3650),
    add column usage_retention_days integer not null default 400
        check (usage_retention_days between 1 and 36500);

-- The lowest UUIDv7 of a moment: its first 48 bits are the Unix time in milliseconds, the rest
-- zero. Partition bounds are these.
create function tollgate_uuid_floor(at timestamptz) returns uuid
    language sql immutable strict
    return (lpad(to_hex(floor(extract(epoch from at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid;

-- A partition can be dropped only if no foreign key points into it: the rows that referred to a
-- job keep their own reason to live (usage outlives jobs) or go with it (attempts, same days).
alter table job_attempts drop constraint job_attempts_job_id_fkey;
alter table usage_records drop constraint usage_records_job_id_fkey;
alter table webhook_deliveries drop constraint webhook_deliveries_job_id_fkey;

-- Where the first day begins: the UTC midnight after every id already written (an id from a
-- clock ahead of this one included).
create temporary table retention_start on commit drop as
select (date_trunc('day', greatest(now(), coalesce(newest.at, now())) at time zone 'utc')
        + interval '1 day') at time zone 'utc' as at
  from (select to_timestamp(('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
                            / 1000.0) as at
          from jobs order by id desc limit 1) newest
  right join (select 1) one on true;

-- jobs
alter table jobs rename to jobs_legacy;
alter table jobs_legacy drop constraint jobs_tenant_id_fkey,
                        drop constraint jobs_token_id_fkey,
                        drop constraint jobs_batch_id_fkey;
create table jobs (like jobs_legacy including defaults including constraints including indexes
                   including storage including comments)
    partition by range (id);
alter table jobs add foreign key (tenant_id) references tenants (id),
                 add foreign key (token_id) references api_tokens (id),
                 add foreign key (batch_id) references batches (id);

-- job_attempts: its key must hold the partition key
alter table job_attempts rename to job_attempts_legacy;
create table job_attempts (like job_attempts_legacy including defaults including constraints
                           including identity including storage including comments)
    partition by range (job_id);
alter table job_attempts add primary key (job_id, id);
select setval(pg_get_serial_sequence('job_attempts', 'id'),
              coalesce((select max(id) from job_attempts_legacy), 0) + 1, false);

-- usage_records
alter table usage_records rename to usage_records_legacy;
create table usage_records (like usage_records_legacy including defaults including constraints
                            including indexes including storage including comments)
    partition by range (job_id);

do $$
declare
    legacy boolean := exists (select 1 from jobs_legacy);
    -- The first day: where the rows already written end, or today on a new installation.
    first date := (select at from retention_start)::date - case when legacy then 0 else 1 end;
    bound uuid := tollgate_uuid_floor(first::timestamp at time zone 'utc');
    day date;
    month_start date;
    month_end date;
begin
    -- The rows already written become one partition ending where the first day begins; an
    -- empty table (a new installation) is simply dropped.
    if legacy then
        execute format('alter table jobs attach partition jobs_legacy for values from (minvalue) to (%L)', bound);
        execute format('alter table job_attempts attach partition job_attempts_legacy for values from (minvalue) to (%L)', bound);
    else
        drop table job_attempts_legacy;
        drop table jobs_legacy;
    end if;
    if exists (select 1 from usage_records_legacy) then
        execute format('alter table usage_records attach partition usage_records_legacy for values from (minvalue) to (%L)', bound);
    else
        drop table usage_records_legacy;
    end if;
    create table jobs_default partition of jobs default with (fillfactor = 90);
    create table job_attempts_default partition of job_attempts default;
    create table usage_records_default partition of usage_records default;
    -- Two days from the first (the worker's sweeper makes a week ahead at its first round), and
    -- the months they fall in (the first may start late, where the rows already written end).
    for day in select generate_series(first, first + 1, interval '1 day')::date loop
        execute format('create table %I partition of jobs for values from (%L) to (%L) with (fillfactor = 90)',
                       'jobs_p' || to_char(day, 'YYYYMMDD'),
                       tollgate_uuid_floor(day::timestamp at time zone 'utc'),
                       tollgate_uuid_floor((day + 1)::timestamp at time zone 'utc'));
        execute format('create table %I partition of job_attempts for values from (%L) to (%L)',
                       'job_attempts_p' || to_char(day, 'YYYYMMDD'),
                       tollgate_uuid_floor(day::timestamp at time zone 'utc'),
                       tollgate_uuid_floor((day + 1)::timestamp at time zone 'utc'));
    end loop;
    month_start := first;
    while month_start <= first + 1 loop
        month_end := (date_trunc('month', month_start) + interval '1 month')::date;
        execute format('create table %I partition of usage_records for values from (%L) to (%L)',
                       'usage_records_p' || to_char(month_start, 'YYYYMM'),
                       tollgate_uuid_floor(month_start::timestamp at time zone 'utc'),
                       tollgate_uuid_floor(month_end::timestamp at time zone 'utc'));
        month_start := month_end;
    end loop;
end $$;
