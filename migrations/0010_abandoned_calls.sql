-- Provider calls made by runs that never recorded their end (the worker died mid-call, or lost its
-- claim to a redelivery): the provider answered and charged, but no attempt row said so, and the
-- operator's spend was short by them. The run that next records the job's end writes one estimated
-- attempt per such run (outcome 'abandoned'), in the statement it writes anyway, and counts them in
-- the day's provider spend as estimated calls.

-- how many of the job's abandoned runs have their estimated attempt written: the next end of a run
-- writes the rest (its claims, less its parked runs, less itself, less these)
alter table jobs add column abandoned_recorded integer not null default 0;

alter table job_attempts drop constraint job_attempts_outcome_check;
alter table job_attempts add constraint job_attempts_outcome_check
    check (outcome in ('succeeded', 'transient_error', 'permanent_error', 'abandoned'));

-- of `calls`, those estimated for abandoned runs: their tokens (and so their cost) are estimates
alter table provider_spend_daily add column estimated_calls bigint not null default 0;
