-- Operators' actions, kept for the audit log: who (the admin token and its tenant), what (an
-- action name, its target and details), and when. Written in the same transaction as the action,
-- so an action is never without its record. Rows are never updated.
create table audit_log (
    id              bigint generated always as identity primary key,
    at              timestamptz not null default now(),
    actor_token_id  uuid not null references api_tokens (id),
    actor_tenant_id uuid not null references tenants (id),
    action          text not null check (length(action) between 1 and 100),
    -- what the action was done to (a tenant or token id, a model name), when it has one
    target          text,
    details         jsonb
);
-- Read newest first by id (the primary key's index); no other index until a query needs one.
