-- Where a streaming job's text goes: the api instance holding the client's connection, by the key
-- it binds once per broker session. The worker routes each piece to `<instance>.<job id>` on the
-- text exchange, so the instance needs no binding per job (a binding is a broker round trip, one at
-- a time per channel: per job, they queued up behind each other at a hundred streams at once).
-- Other instances following the job's events bind `*.<job id>`. Null for a job nobody streams.
alter table jobs add column stream_to text;
