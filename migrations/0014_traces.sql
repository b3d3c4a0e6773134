-- The W3C trace a job belongs to: the `traceparent` of the api span that accepted it (the client's
-- trace continued, or a new one). The worker continues it from the job's AMQP message, or from
-- here when the message came without one (the sweeper's republish, a delayed retry), and sends it
-- on to the provider. A batch's items all carry their batch request's. Null for jobs accepted
-- before this column existed.
alter table jobs add column traceparent text;
