-- Files uploaded through the OpenAI-compatible API (`POST /openai/v1/files`, purpose `batch`): the
-- JSONL input of an OpenAI-style batch. Output and error files are not stored: they are written
-- from the batch's items when read.
create table files (
    id         uuid primary key,
    tenant_id  uuid not null references tenants (id),
    purpose    text not null check (purpose in ('batch')),
    filename   text not null,
    -- the upload as it came (at most the api's batch body limit)
    content    bytea not null,
    -- its non-blank lines, counted at upload
    line_count integer not null check (line_count > 0),
    created_at timestamptz not null default now()
);
create index files_tenant on files (tenant_id, id desc);

-- A batch made through the OpenAI-compatible API keeps what its OpenAI view needs: the endpoint its
-- lines call (which also decides how its output file is written) and its input file. No foreign
-- key: the file may be deleted once the batch is made (its items hold the requests), and the batch
-- still names it, as OpenAI's do.
alter table batches
    add column openai_endpoint text
        check (openai_endpoint in ('/v1/chat/completions', '/v1/responses', '/v1/embeddings')),
    add column input_file_id uuid;
-- The OpenAI listing shows only these batches.
create index batches_openai on batches (tenant_id, id desc) where openai_endpoint is not null;
