//! A circuit breaker per provider: after a run of transient failures the provider is left alone
//! for a cool-down, then one trial call decides whether it is back.
//!
//! Pure state and a clock passed in, so every transition is unit-tested without waiting.

use std::time::Instant;

use tollgate_core::domain::CircuitPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls flow; `failures` transient failures in a row so far.
    Closed { failures: u32 },
    /// No calls until `until`.
    Open { until: Instant },
    /// One trial call is out since `since`; the others wait for its verdict. A trial that never
    /// reports (its task died) is replaced after a cool-down.
    HalfOpen { since: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    state: State,
}

impl Default for Circuit {
    fn default() -> Self {
        Self {
            state: State::Closed { failures: 0 },
        }
    }
}

impl Circuit {
    /// Whether a call may go out now; an open circuit whose cool-down ended lets this one through
    /// as the trial.
    pub fn allows(&mut self, now: Instant, policy: &CircuitPolicy) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { since: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { since } if now >= since + policy.cooldown => {
                self.state = State::HalfOpen { since: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// The provider answered (even with "your request is wrong"): it is healthy.
    pub fn succeeded(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The provider failed in a way that says it is unwell (timeout, 5xx, 429, refused, bad key).
    pub fn failed(&mut self, now: Instant, policy: &CircuitPolicy) {
        let open = State::Open {
            until: now + policy.cooldown,
        };
        self.state = match self.state {
            State::Closed { failures } if failures + 1 >= policy.failure_threshold => open,
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            State::HalfOpen { .. } => open,
            open @ State::Open { .. } => open,
        };
    }

    /// Whether calls are being refused (for logs and metrics).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// Feeds a call's (or probe's) verdict in, saying whether the circuit opened or closed.
    pub fn record(&mut self, healthy: bool, now: Instant, policy: &CircuitPolicy) -> Turned {
        let was_open = self.is_open();
        if healthy {
            self.succeeded();
        } else {
            self.failed(now, policy);
        }
        match (was_open, self.is_open()) {
            (false, true) => Turned::Opened,
            (true, false) => Turned::Closed,
            _ => Turned::Unchanged,
        }
    }
}

/// How a verdict changed a circuit (worth a log line when it opened or closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    Opened,
    Closed,
    Unchanged,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const POLICY: CircuitPolicy = CircuitPolicy {
        failure_threshold: 3,
        cooldown: Duration::from_secs(10),
    };

    #[test]
    fn a_run_of_failures_opens_the_circuit_and_a_success_resets_the_run() {
        let (mut circuit, now) = (Circuit::default(), Instant::now());
        circuit.failed(now, &POLICY);
        circuit.failed(now, &POLICY);
        circuit.succeeded();
        circuit.failed(now, &POLICY);
        circuit.failed(now, &POLICY);
        assert!(circuit.allows(now, &POLICY), "two in a row are not enough");
        circuit.failed(now, &POLICY);
        assert!(!circuit.allows(now, &POLICY));
        assert!(circuit.is_open());
    }

    #[test]
    fn after_the_cool_down_one_trial_goes_out_and_decides() {
        let (mut circuit, now) = (Circuit::default(), Instant::now());
        for _ in 0..3 {
            circuit.failed(now, &POLICY);
        }
        let later = now + POLICY.cooldown;
        assert!(circuit.allows(later, &POLICY), "the trial");
        assert!(!circuit.allows(later, &POLICY), "only one trial at a time");
        circuit.succeeded();
        assert!(circuit.allows(later, &POLICY));
        assert!(!circuit.is_open());
    }

    #[test]
    fn a_failed_trial_opens_the_circuit_for_another_cool_down() {
        let (mut circuit, now) = (Circuit::default(), Instant::now());
        for _ in 0..3 {
            circuit.failed(now, &POLICY);
        }
        let later = now + POLICY.cooldown;
        assert!(circuit.allows(later, &POLICY));
        circuit.failed(later, &POLICY);
        assert!(!circuit.allows(later + Duration::from_secs(9), &POLICY));
        assert!(circuit.allows(later + POLICY.cooldown, &POLICY));
    }

    #[test]
    fn a_trial_that_never_reports_is_replaced_after_a_cool_down() {
        let (mut circuit, now) = (Circuit::default(), Instant::now());
        for _ in 0..3 {
            circuit.failed(now, &POLICY);
        }
        let trial = now + POLICY.cooldown;
        assert!(circuit.allows(trial, &POLICY));
        assert!(circuit.allows(trial + POLICY.cooldown, &POLICY));
    }
}
