//! The worker's Prometheus metrics: jobs finished and what they cost, how long they waited and
//! how long their provider calls took, retries and fallbacks, the state of each provider's circuit
//! and slots, webhook deliveries, and the backlog an autoscaler scales on ([`backlog`]). Served by
//! the worker's own listener ([`crate::probe`]).
//!
//! Labels hold bounded values only (provider, host, model, kind, status); never a tenant or a job.

pub mod backlog;
mod labels;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rust_decimal::prelude::ToPrimitive as _;
use std::sync::atomic::AtomicU64;
use tollgate_core::db::backlog::Backlog;
use tollgate_core::db::job_attempts::{AttemptOutcome, AttemptRecord};
use tollgate_core::metrics::{Latencies, Tally};
use tollgate_core::queue::Topology;

use labels::{
    CallLabels, FallbackLabels, FinishedLabels, HostLabels, KindLabels, ModelLabels, OutcomeLabels,
    ProviderLabels, QueueLabels, TokenLabels, VerdictLabels,
};

/// Every metric of one worker process.
pub struct WorkerMetrics {
    registry: Registry,
    finished: Family<FinishedLabels, Counter>,
    queue_wait: Latencies<KindLabels>,
    overhead: Latencies<KindLabels>,
    calls: Latencies<CallLabels>,
    first_token: Latencies<ModelLabels>,
    answer_checks: Latencies<VerdictLabels>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    retries: Family<ProviderLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    circuit_open: Family<HostLabels, Gauge>,
    in_flight: Family<HostLabels, Gauge>,
    slots: Family<HostLabels, Gauge>,
    webhooks: Family<OutcomeLabels, Counter>,
    queue_messages: Family<QueueLabels, Gauge>,
    queue_oldest: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    batch_items_pending: Gauge,
    cache_answers: Counter,
    /// Jobs finished since the last report to the dashboard's activity (see [`crate::health`]).
    pub tally: Tally,
}

impl Default for WorkerMetrics {
    /// Long on purpose: every metric registered in one flat list, each beside its help text.
    fn default() -> Self {
        let mut registry = tollgate_core::metrics::registry();
        let finished = Family::default();
        registry.register(
            "jobs_finished",
            "Jobs that reached a terminal status, by kind, status, provider and routed model",
            finished.clone(),
        );
        let queue_wait = tollgate_core::metrics::waits();
        registry.register(
            "job_queue_wait_seconds",
            "From a job's acceptance to its first claim (a batch item's includes its wait in Postgres)",
            queue_wait.clone(),
        );
        let overhead = tollgate_core::metrics::waits();
        registry.register(
            "job_gateway_overhead_seconds",
            "A job's time from acceptance to its recorded end minus its providers' time, for jobs that ended in their first run",
            overhead.clone(),
        );
        let calls = tollgate_core::metrics::latencies();
        registry.register(
            "provider_call_duration_seconds",
            "Provider calls, by provider, upstream model and outcome",
            calls.clone(),
        );
        let first_token = tollgate_core::metrics::latencies();
        registry.register(
            "provider_time_to_first_token_seconds",
            "From a streaming call's start to its first piece of text",
            first_token.clone(),
        );
        let answer_checks = tollgate_core::metrics::checks();
        registry.register(
            "answer_check_seconds",
            "Structured answers checked against their JSON schema (or as one JSON object), by verdict",
            answer_checks.clone(),
        );
        let tokens = Family::default();
        registry.register(
            "tokens",
            "Tokens of recorded provider calls, by provider, upstream model and direction",
            tokens.clone(),
        );
        let cost = Family::default();
        registry.register(
            "cost_usd",
            "What recorded provider calls cost at the prices in force, in US dollars (unpriced calls add nothing)",
            cost.clone(),
        );
        let retries = Family::default();
        registry.register(
            "provider_retries",
            "Calls repeated on the same provider after a transient failure",
            retries.clone(),
        );
        let fallbacks = Family::default();
        registry.register(
            "provider_fallbacks",
            "Jobs handed from one provider to the next in their chain",
            fallbacks.clone(),
        );
        let circuit_open = Family::default();
        registry.register(
            "circuit_open",
            "1 while a provider's (or a host's) circuit refuses calls, as this worker sees it",
            circuit_open.clone(),
        );
        let in_flight = Family::default();
        registry.register(
            "provider_calls_in_flight",
            "This worker's provider calls in flight",
            in_flight.clone(),
        );
        let slots = Family::default();
        registry.register(
            "provider_slots",
            "Calls a provider may serve at once: a host's slots (shared by every worker), OpenAI's limit per worker",
            slots.clone(),
        );
        let webhooks = Family::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, given_up, gone)",
            webhooks.clone(),
        );
        let queue_messages = Family::default();
        registry.register(
            "queue_messages",
            "Messages ready in each RabbitMQ queue",
            queue_messages.clone(),
        );
        let queue_oldest = Family::default();
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest work waiting in each work queue (from Postgres: AMQP does not tell)",
            queue_oldest.clone(),
        );
        let batch_items_pending = Gauge::default();
        registry.register(
            "batch_items_pending",
            "Batch items waiting in Postgres for the dispatcher",
            batch_items_pending.clone(),
        );
        let cache_answers = Counter::default();
        registry.register(
            "cache_answers",
            "Jobs a worker answered from the response cache without a provider call (stored answers, and identical jobs' answers)",
            cache_answers.clone(),
        );
        Self {
            registry,
            finished,
            queue_wait,
            overhead,
            calls,
            first_token,
            answer_checks,
            tokens,
            cost,
            retries,
            fallbacks,
            circuit_open,
            in_flight,
            slots,
            webhooks,
            queue_messages,
            queue_oldest,
            batch_items_pending,
            cache_answers,
            tally: Tally::default(),
        }
    }
}

impl WorkerMetrics {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A job claimed for its first run, `waited` after it was accepted.
    pub fn claimed(&self, kind: &'static str, bulk: bool, waited: Duration) {
        self.queue_wait
            .get_or_create(&KindLabels {
                kind,
                lane: lane(bulk),
            })
            .observe(waited.as_secs_f64());
    }

    /// A job's end, recorded: its status, who answered, and the gateway's own share of its time
    /// (when it ended in its first run).
    pub fn finished(&self, end: &Finished<'_>) {
        self.finished
            .get_or_create(&FinishedLabels {
                kind: end.kind,
                status: end.status,
                provider: end.provider.unwrap_or("none"),
                model: end.model.to_owned(),
            })
            .inc();
        match end.status {
            "succeeded" => self.tally.finished(true),
            "failed" => self.tally.finished(false),
            _ => {}
        }
        if let Some(overhead) = end.overhead {
            self.overhead
                .get_or_create(&KindLabels {
                    kind: end.kind,
                    lane: lane(end.bulk),
                })
                .observe(overhead.as_secs_f64());
        }
    }

    /// The tokens and cost of a run's attempts, once recorded.
    pub fn billed(&self, attempts: &[AttemptRecord]) {
        for attempt in attempts {
            let provider = attempt.provider.as_str();
            let model = &attempt.upstream_model;
            let direction = |direction| TokenLabels {
                provider,
                model: model.clone(),
                direction,
            };
            let tokens = |count: Option<i32>| u64::try_from(count.unwrap_or(0)).unwrap_or(0);
            self.tokens
                .get_or_create(&direction("input"))
                .inc_by(tokens(attempt.prompt_tokens));
            self.tokens
                .get_or_create(&direction("output"))
                .inc_by(tokens(attempt.completion_tokens));
            if let Some(cost) = attempt.cost.and_then(|c| c.to_f64()) {
                self.cost
                    .get_or_create(&ModelLabels {
                        provider,
                        model: model.clone(),
                    })
                    .inc_by(cost);
            }
        }
    }

    /// One provider call, as it ended.
    pub fn call(&self, attempt: &AttemptRecord) {
        self.calls
            .get_or_create(&CallLabels {
                provider: attempt.provider.as_str(),
                model: attempt.upstream_model.clone(),
                outcome: outcome_label(attempt.outcome),
            })
            .observe(attempt.latency.as_secs_f64());
    }

    /// A streaming call's first piece of text, `after` its start.
    pub fn first_token(&self, provider: &'static str, model: &str, after: Duration) {
        self.first_token
            .get_or_create(&ModelLabels {
                provider,
                model: model.to_owned(),
            })
            .observe(after.as_secs_f64());
    }

    /// A structured answer checked against its format in `took`.
    pub fn answer_checked(&self, took: Duration, valid: bool) {
        let verdict = if valid { "valid" } else { "invalid" };
        self.answer_checks
            .get_or_create(&VerdictLabels { verdict })
            .observe(took.as_secs_f64());
    }

    /// A call going out to `provider` (on `host`), counted in flight until the guard drops.
    pub fn in_flight(&self, provider: &'static str, host: Option<&str>) -> InFlight {
        let gauge = self.in_flight.get_or_create_owned(&HostLabels {
            provider,
            host: host.unwrap_or_default().to_owned(),
        });
        gauge.inc();
        InFlight(gauge)
    }

    /// Calls to `provider` (on `host`) in flight now.
    pub fn in_flight_now(&self, provider: &'static str, host: Option<&str>) -> u32 {
        let calls = self
            .in_flight
            .get_or_create(&HostLabels {
                provider,
                host: host.unwrap_or_default().to_owned(),
            })
            .get();
        u32::try_from(calls).unwrap_or(0)
    }

    pub fn retried(&self, provider: &'static str) {
        self.retries
            .get_or_create(&ProviderLabels { provider })
            .inc();
    }

    pub fn fell_back(&self, from: &'static str, to: &'static str, busy: bool) {
        let reason = if busy { "overflow" } else { "fallback" };
        self.fallbacks
            .get_or_create(&FallbackLabels { from, to, reason })
            .inc();
    }

    /// A job answered from the response cache.
    pub fn cache_hit(&self) {
        self.cache_answers.inc();
    }

    /// A webhook attempt's outcome.
    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The circuits and slots as the providers hold them now (read at each scrape).
    pub fn health(&self, providers: &[ProviderHealth]) {
        self.circuit_open.clear();
        self.slots.clear();
        for provider in providers {
            let labels = HostLabels {
                provider: provider.provider,
                host: provider.host.clone().unwrap_or_default(),
            };
            self.circuit_open
                .get_or_create(&labels)
                .set(i64::from(provider.circuit_open));
            self.slots
                .get_or_create(&labels)
                .set(i64::from(provider.slots));
        }
    }
}

impl WorkerMetrics {
    /// The messages ready in each queue.
    pub fn queue_depths(&self, depths: &[(String, u32)]) {
        for (queue, ready) in depths {
            self.queue_messages
                .get_or_create(&QueueLabels {
                    queue: queue.clone(),
                })
                .set(i64::from(*ready));
        }
    }

    /// The ages of the oldest waiting work and the batch items pending. A work queue with nothing
    /// waiting reads 0.
    pub fn backlog(&self, backlog: &Backlog, topology: &Topology) {
        for (queue, age) in [
            (topology.jobs_queue(), backlog.oldest_single),
            (topology.bulk_queue(), backlog.oldest_batch_item),
            (topology.webhooks_queue(), backlog.oldest_due_webhook),
        ] {
            self.queue_oldest
                .get_or_create(&QueueLabels {
                    queue: topology.unprefixed(&queue).to_owned(),
                })
                .set(age.unwrap_or(0.0).max(0.0));
        }
        self.batch_items_pending.set(backlog.batch_items_pending);
    }
}

/// A provider's (or a host's) state, for the metrics.
pub struct ProviderHealth {
    pub provider: &'static str,
    /// The fleet's host; `None` for OpenAI.
    pub host: Option<String>,
    pub circuit_open: bool,
    pub slots: u32,
}

/// What [`WorkerMetrics::finished`] counts.
pub struct Finished<'a> {
    pub kind: &'static str,
    pub bulk: bool,
    pub status: &'static str,
    pub provider: Option<&'static str>,
    pub model: &'a str,
    pub overhead: Option<Duration>,
}

/// A call in flight; counted down when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn lane(bulk: bool) -> &'static str {
    if bulk { "batch" } else { "single" }
}

fn outcome_label(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::TransientError => "transient_error",
        AttemptOutcome::PermanentError => "permanent_error",
        AttemptOutcome::Abandoned => "abandoned",
        AttemptOutcome::Cancelled => "cancelled",
    }
}
