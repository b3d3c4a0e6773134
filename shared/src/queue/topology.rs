//! Every exchange and queue Tollgate uses, declared in this one place.
//!
//! Names carry the deployment's prefix (`TOLLGATE_QUEUE_PREFIX`), so several deployments — and every
//! test — can share one broker without seeing each other's messages.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
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
        channel
            .exchange_declare(
                self.jobs_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;

        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut dead = FieldTable::default();
        // Quorum: replicated and always persistent; the dead-letter queue needs no limit of its own.
        dead.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(self.dead_letter_queue().into(), queue, dead)
            .await?;

        let mut work = FieldTable::default();
        work.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // A message redelivered this often (each worker crash or requeue counts) goes to the
        // dead-letter exchange instead of looping forever.
        work.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        work.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().into()),
        );
        for work_queue in [self.jobs_queue(), self.bulk_queue()] {
            channel
                .queue_declare(work_queue.into(), queue, work.clone())
                .await?;
        }

        channel
            .exchange_declare(
                self.wait_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        for bucket in RETRY_DELAYS {
            // Classic queues: each holds one delay, so the head always expires first; when it does,
            // the message is dead-lettered back to the jobs exchange as an ordinary job message,
            // to the queue it came from (a batch item's own wait queue sends it to the bulk queue).
            for (wait_queue, back_to) in [
                (self.wait_queue(bucket), JOB_ROUTING_KEY),
                (self.bulk_wait_queue(bucket), BULK_ROUTING_KEY),
            ] {
                let mut wait = FieldTable::default();
                let ttl = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX);
                wait.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
                wait.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(self.jobs_exchange().into()),
                );
                wait.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(back_to.into()),
                );
                channel
                    .queue_declare(wait_queue.into(), queue, wait)
                    .await?;
            }
        }

        for (exchange, kind) in [
            (self.webhooks_exchange(), ExchangeKind::Direct),
            (self.webhook_wait_exchange(), ExchangeKind::Direct),
            (self.events_exchange(), ExchangeKind::Topic),
            (self.streams_exchange(), ExchangeKind::Topic),
            (self.control_exchange(), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(exchange.into(), kind, durable, FieldTable::default())
                .await?;
        }
        let mut webhooks = FieldTable::default();
        webhooks.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // A delivery message that keeps crashing deliverers is dropped after this many tries; its
        // row stays pending, and the sweeper sends it again later.
        webhooks.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        channel
            .queue_declare(self.webhooks_queue().into(), queue, webhooks)
            .await?;
        for bucket in WEBHOOK_WAIT_BUCKETS {
            // No queue TTL: each message carries its own expiration (see WEBHOOK_WAIT_BUCKETS).
            let mut wait = FieldTable::default();
            wait.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.webhooks_exchange().into()),
            );
            wait.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(WEBHOOK_ROUTING_KEY.into()),
            );
            channel
                .queue_declare(self.webhook_wait_queue(bucket).into(), queue, wait)
                .await?;
        }

        let bind = |queue: String, exchange: String, key: String| {
            let key = ShortString::from(key);
            async move {
                channel
                    .queue_bind(
                        queue.into(),
                        exchange.into(),
                        key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
        };
        bind(
            self.jobs_queue(),
            self.jobs_exchange(),
            JOB_ROUTING_KEY.into(),
        )
        .await?;
        bind(
            self.bulk_queue(),
            self.jobs_exchange(),
            BULK_ROUTING_KEY.into(),
        )
        .await?;
        bind(
            self.dead_letter_queue(),
            self.dead_letter_exchange(),
            String::new(),
        )
        .await?;
        for bucket in RETRY_DELAYS {
            bind(
                self.wait_queue(bucket),
                self.wait_exchange(),
                wait_key(bucket),
            )
            .await?;
            bind(
                self.bulk_wait_queue(bucket),
                self.wait_exchange(),
                bulk_wait_key(bucket),
            )
            .await?;
        }
        bind(
            self.webhooks_queue(),
            self.webhooks_exchange(),
            WEBHOOK_ROUTING_KEY.into(),
        )
        .await?;
        for bucket in WEBHOOK_WAIT_BUCKETS {
            bind(
                self.webhook_wait_queue(bucket),
                self.webhook_wait_exchange(),
                wait_key(bucket),
            )
            .await?;
        }
        Ok(())
    }

    /// Every queue `declare` makes, with its name without the prefix (a metric's label).
    pub fn queues(&self) -> Vec<(String, String)> {
        let waits = RETRY_DELAYS
            .map(|bucket| self.wait_queue(bucket))
            .into_iter()
            .chain(RETRY_DELAYS.map(|bucket| self.bulk_wait_queue(bucket)));
        let webhook_waits = WEBHOOK_WAIT_BUCKETS.map(|bucket| self.webhook_wait_queue(bucket));
        [
            self.jobs_queue(),
            self.bulk_queue(),
            self.dead_letter_queue(),
            self.webhooks_queue(),
        ]
        .into_iter()
        .chain(waits)
        .chain(webhook_waits)
        .map(|name| (self.unprefixed(&name).to_owned(), name))
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
        for (_, queue) in self.queues() {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            self.jobs_exchange(),
            self.dead_letter_exchange(),
            self.wait_exchange(),
            self.webhooks_exchange(),
            self.webhook_wait_exchange(),
            self.events_exchange(),
            self.streams_exchange(),
            self.control_exchange(),
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
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
