-- What each fleet host's models can do, as the host says (`/api/show`'s `capabilities`: completion,
-- tools, vision, thinking, embedding), so that intake and every worker route a request only to a
-- model that can serve it (an image to a model with vision). Workers write it as they list their
-- hosts' models; a change bumps `settings.version`, so every process reloads it with the settings.
create table host_models (
    host_id      uuid        not null references ollama_hosts (id) on delete cascade,
    -- Ollama's full name (`llama3:latest`).
    model        text        not null,
    digest       text,
    -- Null: the host did not say (too old to report them): the model counts as able to do
    -- everything.
    capabilities text[],
    listed_at    timestamptz not null default now(),
    primary key (host_id, model)
);

comment on table host_models is 'The models each fleet host has and what each can do, as its listing said';
