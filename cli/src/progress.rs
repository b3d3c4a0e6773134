//! A batch's progress while the CLI waits for it: a bar with the counts and the rate on a terminal,
//! and a plain line every few seconds when stderr is not one (a CI log, a pipe).

use std::fmt;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::api::{Batch, Counts};

/// How often the plain form writes a line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    /// The bar, and the terminal it draws on.
    bar: Option<(ProgressBar, Arc<dyn TermLike>)>,
    started: Instant,
    /// Items already ended when the wait began: the rate counts only what ended since.
    ended_at_start: u64,
    last_plain: Option<Instant>,
}

impl Progress {
    /// Draws on stderr: a bar when it is a terminal, plain lines otherwise.
    pub fn new(batch: &Batch) -> Self {
        let terminal = std::io::stderr()
            .is_terminal()
            .then(|| Arc::new(console::Term::stderr()) as Arc<dyn TermLike>);
        Self::drawing_on(batch, terminal)
    }

    fn drawing_on(batch: &Batch, terminal: Option<Arc<dyn TermLike>>) -> Self {
        let bar = terminal.map(|terminal| {
            let target = ProgressDrawTarget::term_like(Box::new(Shared(terminal.clone())));
            let bar = ProgressBar::with_draw_target(Some(batch.counts.total), target);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            (bar, terminal)
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
            Some((bar, _)) => {
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

    /// Draws the bar's last state and ends its line, so what is written next starts on a line of
    /// its own (the bar leaves the cursor after itself).
    pub fn finish(&self, batch: &Batch) {
        let elapsed = self.started.elapsed();
        match &self.bar {
            Some((bar, terminal)) => {
                bar.set_position(batch.counts.ended());
                bar.finish_with_message(counts_and_rate(
                    &batch.counts,
                    self.ended_at_start,
                    elapsed,
                ));
                let _ = terminal.write_line("");
                let _ = terminal.flush();
            }
            None => eprintln!("{}", line(batch, self.ended_at_start, elapsed)),
        }
    }
}

/// A terminal the bar draws on and [`Progress::finish`] writes to as well.
struct Shared(Arc<dyn TermLike>);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl TermLike for Shared {
    fn width(&self) -> u16 {
        self.0.width()
    }
    fn height(&self) -> u16 {
        self.0.height()
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
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
    use std::sync::Mutex;

    use serde_json::Value;

    use super::*;

    /// A terminal that keeps what is written to it, cursor moves and clears as markers.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<String>);

    impl Recorder {
        fn push(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().expect("recorder").push_str(s);
            Ok(())
        }
    }

    impl TermLike for Recorder {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            self.push("<up>")
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            self.push("<down>")
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("<clear>")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_finished_bar_ends_its_line_so_the_summary_starts_a_new_one() {
        let batch = Batch {
            id: "b1".into(),
            status: "completed".into(),
            counts: Counts {
                total: 3,
                succeeded: 3,
                ..Counts::default()
            },
            raw: Value::Null,
        };
        let terminal = Arc::new(Recorder::default());
        let progress = Progress::drawing_on(&batch, Some(terminal.clone()));
        progress.finish(&batch);
        let written = terminal.0.lock().expect("recorder").clone();
        let last_bar = written.rfind("3/3").expect("the bar was drawn");
        assert!(
            written[last_bar..].ends_with('\n'),
            "the bar's line is left open: {written:?}"
        );
    }

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
