-- Images shown to models. A job's row names an image by its SHA-256; the bytes are stored here,
-- once per tenant and UTC day (a day's jobs that show the same image share one row; tenants never
-- share one), outside the job's row and its queue message. `day` is the lowest UUIDv7 of the UTC
-- midnight that begins the day of the jobs showing it (the day in their ids), so this table is
-- partitioned with the same bounds as `jobs`, and a day of images is dropped with its day of jobs
-- (see `shared/src/db/partitions.rs`).
create table images (
    day        uuid        not null,
    tenant_id  uuid        not null,
    sha256     bytea       not null,
    media_type text        not null check (media_type in ('image/png', 'image/jpeg', 'image/webp', 'image/gif')),
    data       bytea       not null,
    created_at timestamptz not null default now(),
    primary key (day, tenant_id, sha256)
) partition by range (day);

comment on table images is 'Image bytes shown to models, one row per tenant, day and SHA-256; a job names them by hash';

create table images_default partition of images default;

-- A partition for every day `jobs` has one for (the worker prepares the days ahead for both).
do $$
declare
    part record;
begin
    for part in
        select c.relname::text as name, pg_get_expr(c.relpartbound, c.oid) as bound
          from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = 'jobs'::regclass and c.relname::text like 'jobs\_p%'
    loop
        execute format('create table %I partition of images %s',
                       'images' || substr(part.name, 5), part.bound);
    end loop;
end $$;

-- Compressed formats do not compress again: stored out of line without trying (on every
-- partition; the days prepared later copy it).
alter table images alter column data set storage external;
