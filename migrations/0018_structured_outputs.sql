-- Structured outputs are enforced: an answer that does not match its JSON schema (or is not one
-- JSON object) is asked for again on the same provider, up to this many calls in all.
alter table settings
    add column structured_output_attempts integer not null default 3
        check (structured_output_attempts between 1 and 10);
