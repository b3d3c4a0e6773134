-- Token streaming through the queue, and cancelling a job that is running.

-- the client follows the job's text as it is generated: the worker calls the provider in streaming
-- mode and forwards deltas to the api instances that watch the job. A streaming job is never run a
-- second time once its text may have reached the client (see the worker's execute module).
alter table jobs add column stream boolean not null default false;

-- a cancel asked for while the job runs: the worker holding it aborts the provider call and ends the
-- job 'cancelled', billing what was generated; a run that claims the job later ends it at once
alter table jobs add column cancel_requested_at timestamptz;

-- an attempt cut short because its job was cancelled while the provider answered
alter table job_attempts drop constraint job_attempts_outcome_check;
alter table job_attempts add constraint job_attempts_outcome_check
    check (outcome in ('succeeded', 'transient_error', 'permanent_error', 'abandoned', 'cancelled'));
