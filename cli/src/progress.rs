//! A batch's progress while the CLI waits for it: a bar with the counts and the rate on a terminal,
//! and a plain line every few seconds when stderr is not one (a CI log, a pipe).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::api::{Batch, Counts};

/// How often the plain form writes a line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    /// Items already ended when the wait began: the rate counts only what ended since.
    ended_at_start: u64,
    last_plain: Option<Instant>,
}

impl Progress {
    pub fn new(batch: &Batch) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(batch.counts.total),
                ProgressDrawTarget::stderr(),
            );
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            ended_at_start: batch.counts.ended(),
            last_plain: None,
        }
    }

    pub fn update(&mut self, batch: &Batch) {
        let elapsed = self.started.elapsed();
        match &self.bar {
            Some(bar) => {
                bar.set_length(batch.counts.total);
                bar.set_position(batch.counts.ended());
                bar.set_message(counts_and_rate(&batch.counts, self.ended_at_start, elapsed));
            }
            None => {
                if self.last_plain.is_some_and(|at| at.elapsed() < PLAIN_EVERY) {
                    return;
                }
                self.last_plain = Some(Instant::now());
                eprintln!("{}", line(batch, self.ended_at_start, elapsed));
            }
        }
    }

    pub fn finish(&self, batch: &Batch) {
        let elapsed = self.started.elapsed();
        if let Some(bar) = &self.bar {
            bar.set_position(batch.counts.ended());
            bar.finish_with_message(counts_and_rate(&batch.counts, self.ended_at_start, elapsed));
        } else {
            eprintln!("{}", line(batch, self.ended_at_start, elapsed));
        }
    }
}

/// `✓ 118 ✗ 2 ⊘ 0 · 40.0 items/s`: the ended items by outcome, and how fast items have ended
/// since the wait began.
pub fn counts_and_rate(counts: &Counts, ended_at_start: u64, elapsed: Duration) -> String {
    let done = counts.ended().saturating_sub(ended_at_start);
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    format!(
        "✓ {} ✗ {} ⊘ {} · {rate:.1} items/s",
        counts.succeeded, counts.failed, counts.cancelled
    )
}

/// The plain form: `batch 0190… in_progress: 120/500 ended (✓ 118 ✗ 2 ⊘ 0 · 40.0 items/s)`.
pub fn line(batch: &Batch, ended_at_start: u64, elapsed: Duration) -> String {
    format!(
        "batch {} {}: {}/{} ended ({})",
        batch.id,
        batch.status,
        batch.counts.ended(),
        batch.counts.total,
        counts_and_rate(&batch.counts, ended_at_start, elapsed)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_rate_counts_only_what_ended_during_the_wait() {
        let counts = Counts {
            total: 500,
            succeeded: 118,
            failed: 2,
            ..Counts::default()
        };
        assert_eq!(
            counts_and_rate(&counts, 40, Duration::from_secs(2)),
            "✓ 118 ✗ 2 ⊘ 0 · 40.0 items/s"
        );
        assert!(counts_and_rate(&counts, 0, Duration::ZERO).ends_with("0.0 items/s"));
        let batch = Batch {
            id: "b1".into(),
            status: "in_progress".into(),
            counts,
            raw: Value::Null,
        };
        assert_eq!(
            line(&batch, 120, Duration::from_secs(1)),
            "batch b1 in_progress: 120/500 ended (✓ 118 ✗ 2 ⊘ 0 · 0.0 items/s)"
        );
    }
}
