//! Every exchange and queue Tollgate uses, declared in this one place.
//!
//! Names carry the deployment's prefix (`TOLLGATE_QUEUE_PREFIX`), so several deployments — and every
//! test — can share one broker without seeing each other's messages.

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

    /// Fanout exchange that receives what the work queue dead-letters.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where poison messages rest, for the worker to fail their jobs and operators to inspect.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
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
        channel
            .queue_declare(self.jobs_queue().into(), queue, work)
            .await?;

        let bind = |queue: String, exchange: String, key: &str| {
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
        bind(self.jobs_queue(), self.jobs_exchange(), JOB_ROUTING_KEY).await?;
        bind(self.dead_letter_queue(), self.dead_letter_exchange(), "").await?;
        Ok(())
    }

    /// Deletes everything `declare` made. For tests and for tearing down a deployment.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in [self.jobs_queue(), self.dead_letter_queue()] {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [self.jobs_exchange(), self.dead_letter_exchange()] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}
