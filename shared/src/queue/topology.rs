//! Every exchange and queue Tollgate uses, declared in this one place.
//!
//! Names carry the deployment's prefix (`TOLLGATE_QUEUE_PREFIX`), so several deployments — and every
//! test — can share one broker without seeing each other's messages.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// How often a message may be handed to a consumer before the broker dead-letters it. A message
/// that crashed this many workers is poison; quorum queues in RabbitMQ 3.x have no default limit.
pub const DELIVERY_LIMIT: i64 = 10;

/// The routing key of job messages on the jobs exchange.
pub const JOB_ROUTING_KEY: &str = "job";
/// Routing key of batch items the dispatcher releases, to the bulk queue.
pub const BULK_ROUTING_KEY: &str = "bulk";

/// The delays a job can wait between runs, one TTL wait queue each: messages expire only at a
/// queue's head, so one queue must never hold two delays.
pub const RETRY_DELAYS: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
];

/// The routing key of webhook delivery messages on the webhooks exchange.
pub const WEBHOOK_ROUTING_KEY: &str = "delivery";

/// The wait queues of webhook retries. Unlike a job's, a delivery's delay is jittered and can be
/// stretched by `Retry-After`, so each message carries its own expiration and waits in the queue of
/// its order of magnitude: messages expire only at a queue's head, so a message can be held up by
/// one ahead of it at most by the spread of its bucket.
pub const WEBHOOK_WAIT_BUCKETS: [Duration; 9] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(12 * 3600),
    Duration::from_secs(24 * 3600),
];

/// The wait queue for `delay`: the shortest that waits at least that long, or the longest.
pub fn wait_bucket(delay: Duration) -> Duration {
    RETRY_DELAYS
        .into_iter()
        .find(|&bucket| bucket >= delay)
        .unwrap_or(RETRY_DELAYS[RETRY_DELAYS.len() - 1])
}

/// The webhook wait queue for `delay`: the shortest bucket that holds it, or the longest.
pub fn webhook_wait_bucket(delay: Duration) -> Duration {
    WEBHOOK_WAIT_BUCKETS
        .into_iter()
        .find(|&bucket| bucket >= delay)
        .unwrap_or(WEBHOOK_WAIT_BUCKETS[WEBHOOK_WAIT_BUCKETS.len() - 1])
}

/// The routing key (and queue-name suffix) of a wait bucket.
pub fn wait_key(bucket: Duration) -> String {
    format!("{}s", bucket.as_secs())
}

/// The routing key of a wait bucket's queue for batch items.
pub fn bulk_wait_key(bucket: Duration) -> String {
    format!("bulk.{}", wait_key(bucket))
}

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Direct exchange that job messages are published to.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Work queue for jobs submitted one at a time (interactive traffic).
    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs.interactive", self.prefix)
    }

    /// Work queue for batch items, which the dispatcher releases from Postgres a little at a time;
    /// workers consume it with fewer slots than the interactive queue, so single jobs go first.
    pub fn bulk_queue(&self) -> String {
        format!("{}.jobs.bulk", self.prefix)
    }

    /// Fanout exchange that receives what the work queues dead-letter.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where poison messages rest, for the worker to fail their jobs and operators to inspect.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }

    /// Direct exchange of the wait queues; the routing key names the delay.
    pub fn wait_exchange(&self) -> String {
        format!("{}.wait", self.prefix)
    }

    /// The TTL wait queue of one delay bucket.
    pub fn wait_queue(&self, bucket: Duration) -> String {
        format!("{}.wait.{}", self.prefix, wait_key(bucket))
    }

    /// The TTL wait queue of one delay bucket for batch items: it hands them back to the bulk
    /// queue, so a retried item keeps its lane.
    pub fn bulk_wait_queue(&self, bucket: Duration) -> String {
        format!("{}.wait.bulk.{}", self.prefix, wait_key(bucket))
    }

    /// Direct exchange that webhook delivery messages are published to.
    pub fn webhooks_exchange(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// The queue the worker's webhook deliverer consumes.
    pub fn webhooks_queue(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// Direct exchange of the webhook wait queues; the routing key names the bucket.
    pub fn webhook_wait_exchange(&self) -> String {
        format!("{}.webhooks.wait", self.prefix)
    }

    /// The wait queue of one webhook delay bucket.
    pub fn webhook_wait_queue(&self, bucket: Duration) -> String {
        format!("{}.webhooks.wait.{}", self.prefix, wait_key(bucket))
    }

    /// Topic exchange of job events (routing key `job.<id>`): every api instance binds its own
    /// queue to it, for the jobs its clients watch (SSE, submit-and-wait).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Topic exchange of streaming jobs' text (routing key `<instance>.<job id>`): the api instance
    /// holding a streaming client binds `<instance>.*` once per session, an instance following a
    /// job's events `*.<job id>`, so the text goes only where a client reads it.
    pub fn streams_exchange(&self) -> String {
        format!("{}.text", self.prefix)
    }

    /// Fanout exchange of cancels for running jobs: every worker binds its own queue.
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// Declares everything; idempotent, run by every process on every (re)connect.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in self.exchanges() {
            channel
                .exchange_declare(
                    exchange.name.into(),
                    exchange.kind,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for queue in self.queue_specs() {
            channel
                .queue_declare(queue.name.clone().into(), durable, queue.arguments.0)
                .await?;
            for (exchange, key) in queue.bindings {
                channel
                    .queue_bind(
                        queue.name.clone().into(),
                        exchange.into(),
                        key.into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Every exchange, with its kind.
    fn exchanges(&self) -> [ExchangeSpec; 8] {
        let spec = |name, kind| ExchangeSpec { name, kind };
        [
            spec(self.jobs_exchange(), ExchangeKind::Direct),
            spec(self.dead_letter_exchange(), ExchangeKind::Fanout),
            spec(self.wait_exchange(), ExchangeKind::Direct),
            spec(self.webhooks_exchange(), ExchangeKind::Direct),
            spec(self.webhook_wait_exchange(), ExchangeKind::Direct),
            spec(self.events_exchange(), ExchangeKind::Topic),
            spec(self.streams_exchange(), ExchangeKind::Topic),
            spec(self.control_exchange(), ExchangeKind::Fanout),
        ]
    }

    /// Every queue that lives as long as the deployment (not an instance's own hint queues), with
    /// its arguments and the bindings that feed it.
    fn queue_specs(&self) -> Vec<QueueSpec> {
        // Quorum queues are replicated and always persistent. A work message redelivered
        // `DELIVERY_LIMIT` times (each worker crash or requeue counts) goes to the dead-letter
        // exchange instead of looping forever; a webhook message is dropped (its row stays
        // pending, and the sweeper sends it again later).
        let work = Arguments::default()
            .quorum()
            .delivery_limit()
            .dead_letter_to(self.dead_letter_exchange(), None);
        let mut specs = vec![
            QueueSpec::new(self.dead_letter_queue(), Arguments::default().quorum())
                .bound(self.dead_letter_exchange(), ""),
            QueueSpec::new(self.jobs_queue(), work.clone())
                .bound(self.jobs_exchange(), JOB_ROUTING_KEY),
            QueueSpec::new(self.bulk_queue(), work).bound(self.jobs_exchange(), BULK_ROUTING_KEY),
            QueueSpec::new(
                self.webhooks_queue(),
                Arguments::default().quorum().delivery_limit(),
            )
            .bound(self.webhooks_exchange(), WEBHOOK_ROUTING_KEY),
        ];
        // Classic queues, one delay each, so the head always expires first; when it does, the
        // message is dead-lettered back to the jobs exchange as an ordinary job message, to the
        // queue it came from (a batch item's own wait queue sends it to the bulk queue).
        for bucket in RETRY_DELAYS {
            for (queue, key, back_to) in [
                (self.wait_queue(bucket), wait_key(bucket), JOB_ROUTING_KEY),
                (
                    self.bulk_wait_queue(bucket),
                    bulk_wait_key(bucket),
                    BULK_ROUTING_KEY,
                ),
            ] {
                let wait = Arguments::default()
                    .ttl(bucket)
                    .dead_letter_to(self.jobs_exchange(), Some(back_to));
                specs.push(QueueSpec::new(queue, wait).bound(self.wait_exchange(), &key));
            }
        }
        // No queue TTL: each webhook message carries its own expiration (see
        // `WEBHOOK_WAIT_BUCKETS`).
        for bucket in WEBHOOK_WAIT_BUCKETS {
            let wait = Arguments::default()
                .dead_letter_to(self.webhooks_exchange(), Some(WEBHOOK_ROUTING_KEY));
            specs.push(
                QueueSpec::new(self.webhook_wait_queue(bucket), wait)
                    .bound(self.webhook_wait_exchange(), &wait_key(bucket)),
            );
        }
        specs
    }

    /// Every queue `declare` makes, with its name without the prefix (a metric's label).
    pub fn queues(&self) -> Vec<(String, String)> {
        self.queue_specs()
            .into_iter()
            .map(|queue| (self.unprefixed(&queue.name).to_owned(), queue.name))
            .collect()
    }

    /// A name of this topology without its prefix.
    pub fn unprefixed<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(name)
    }

    /// Deletes everything `declare` made. For tests and for tearing down a deployment.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.queue_specs() {
            channel
                .queue_delete(queue.name.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in self.exchanges() {
            channel
                .exchange_delete(exchange.name.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// An exchange `declare` makes (durable).
struct ExchangeSpec {
    name: String,
    kind: ExchangeKind,
}

/// A queue `declare` makes (durable), and the bindings that feed it: (exchange, routing key).
struct QueueSpec {
    name: String,
    arguments: Arguments,
    bindings: Vec<(String, String)>,
}

impl QueueSpec {
    fn new(name: String, arguments: Arguments) -> Self {
        Self {
            name,
            arguments,
            bindings: Vec::new(),
        }
    }

    fn bound(mut self, exchange: String, key: &str) -> Self {
        self.bindings.push((exchange, key.to_owned()));
        self
    }
}

/// A queue's `x-` arguments.
#[derive(Clone, Default)]
struct Arguments(FieldTable);

impl Arguments {
    fn with(mut self, name: &str, value: AMQPValue) -> Self {
        self.0.insert(name.into(), value);
        self
    }

    fn quorum(self) -> Self {
        self.with("x-queue-type", AMQPValue::LongString("quorum".into()))
    }

    fn delivery_limit(self) -> Self {
        self.with("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT))
    }

    fn ttl(self, ttl: Duration) -> Self {
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.with("x-message-ttl", AMQPValue::LongLongInt(millis))
    }

    /// Dead-letters to `exchange`, with `key` in place of the message's own routing key if given.
    fn dead_letter_to(self, exchange: String, key: Option<&str>) -> Self {
        let with = self.with(
            "x-dead-letter-exchange",
            AMQPValue::LongString(exchange.into()),
        );
        match key {
            Some(key) => with.with(
                "x-dead-letter-routing-key",
                AMQPValue::LongString(key.into()),
            ),
            None => with,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_waits_in_the_shortest_queue_that_is_long_enough() {
        assert_eq!(wait_bucket(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            wait_bucket(Duration::from_millis(1500)),
            Duration::from_secs(5)
        );
        assert_eq!(
            wait_bucket(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            wait_bucket(Duration::from_secs(86_400)),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn a_webhook_delay_waits_in_the_bucket_of_its_magnitude() {
        assert_eq!(
            webhook_wait_bucket(Duration::from_millis(50)),
            Duration::from_secs(1)
        );
        assert_eq!(
            webhook_wait_bucket(Duration::from_secs(5)),
            Duration::from_secs(10)
        );
        assert_eq!(
            webhook_wait_bucket(Duration::from_secs(36_000)),
            Duration::from_secs(43_200)
        );
        assert_eq!(
            webhook_wait_bucket(Duration::from_secs(1_000_000)),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn every_wait_queue_has_its_own_name() {
        let topology = Topology::new("p");
        let names: std::collections::HashSet<_> = RETRY_DELAYS
            .map(|b| topology.wait_queue(b))
            .into_iter()
            .collect();
        assert_eq!(names.len(), RETRY_DELAYS.len());
        let bulk: std::collections::HashSet<_> = RETRY_DELAYS
            .map(|b| topology.bulk_wait_queue(b))
            .into_iter()
            .collect();
        assert!(bulk.is_disjoint(&names), "batch items wait apart");
        assert_eq!(bulk_wait_key(Duration::from_secs(5)), "bulk.5s");
        assert_eq!(topology.wait_queue(Duration::from_secs(5)), "p.wait.5s");
    }
}
