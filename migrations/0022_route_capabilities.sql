-- What a route's upstream model can do, as an operator declares it (Ollama's names: completion,
-- tools, vision, thinking, embedding). A cloud route's model cannot be asked, so it counts as
-- able to do everything unless its route says otherwise; for an Ollama route the declaration
-- bounds what the hosts' listings say. Null: not declared.
alter table model_routes
    add column capabilities text[];

comment on column model_routes.capabilities is 'What the upstream model can do, as declared (null: not declared)';
