//! The progress of long `gather` and `compute` calls: a counter of finished
//! tasks, drawn as a terminal bar or handed to a callback.
//!
//! The count is of *finished* tasks among all those the call waits for
//! (every task of a computed graph, not only its outputs), in whatever order
//! they finish; the ETA is the remaining count over the rate observed since
//! the call began. The bar is drawn on stderr with indicatif, only when
//! stderr is a terminal, only after the call has run for [`SHOW_AFTER`]
//! (short calls never flicker), and never when the client's options say so.
//! A [`ProgressBar::Callback`] gets every update instead, terminal or not.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar as Bar, ProgressDrawTarget, ProgressStyle};

/// When to show the progress of `gather` and `compute` calls.
#[derive(Clone, Default)]
pub enum ProgressBar {
    /// A bar on stderr when it is a terminal and the call takes more than a
    /// moment (the default).
    #[default]
    Auto,
    /// Never.
    Never,
    /// Call this with every update (about ten times a second while a call
    /// waits, and once at its end), whatever stderr is: to drive a progress
    /// display of your own.
    Callback(Arc<dyn Fn(&ProgressUpdate) + Send + Sync>),
}

impl std::fmt::Debug for ProgressBar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgressBar::Auto => f.write_str("Auto"),
            ProgressBar::Never => f.write_str("Never"),
            ProgressBar::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// Where a waiting call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressUpdate {
    /// Tasks finished (succeeded or failed), in any order.
    pub done: usize,
    /// Tasks the call waits for.
    pub total: usize,
    /// Since the call began.
    pub elapsed: Duration,
    /// Time left at the rate observed so far (`None` before the first task
    /// finished).
    pub eta: Option<Duration>,
}

/// A call shorter than this draws nothing.
const SHOW_AFTER: Duration = Duration::from_millis(500);
/// How often the count is taken again (and the bar redrawn).
const TICK: Duration = Duration::from_millis(100);

/// Counts finished tasks against a total and estimates the time left.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counter {
    total: usize,
    done: usize,
    start: Instant,
}

impl Counter {
    pub fn new(total: usize, start: Instant) -> Counter {
        Counter { total, done: 0, start }
    }

    /// `done` tasks are finished now; the count never goes back (a task
    /// recomputed after a loss does not un-finish the call's progress).
    pub fn update(&mut self, done: usize) {
        self.done = self.done.max(done.min(self.total));
    }

    pub fn at(&self, now: Instant) -> ProgressUpdate {
        let elapsed = now.saturating_duration_since(self.start);
        let eta = (self.done > 0).then(|| {
            let per_task = elapsed.as_secs_f64() / self.done as f64;
            Duration::from_secs_f64(per_task * (self.total - self.done) as f64)
        });
        ProgressUpdate { done: self.done, total: self.total, elapsed, eta }
    }
}

pub(crate) struct Progress {
    counter: Counter,
    show: Show,
}

enum Show {
    Nothing,
    Terminal(Option<Bar>),
    Callback(Arc<dyn Fn(&ProgressUpdate) + Send + Sync>),
}

impl Progress {
    pub fn new(mode: &ProgressBar, total: usize) -> Progress {
        let show = match mode {
            ProgressBar::Auto if std::io::stderr().is_terminal() => Show::Terminal(None),
            ProgressBar::Auto | ProgressBar::Never => Show::Nothing,
            ProgressBar::Callback(f) => Show::Callback(Arc::clone(f)),
        };
        Progress { counter: Counter::new(total, Instant::now()), show }
    }

    /// Whether anything is shown (else the caller need not count).
    pub fn shown(&self) -> bool {
        !matches!(self.show, Show::Nothing)
    }

    /// When the waiting caller should wake to count again (`None`: never).
    pub fn next_tick(&self) -> Option<Instant> {
        self.shown().then(|| Instant::now() + TICK)
    }

    /// `done` tasks have finished.
    pub fn update(&mut self, done: usize) {
        self.counter.update(done);
        let now = Instant::now();
        let update = self.counter.at(now);
        match &mut self.show {
            Show::Nothing => {}
            Show::Callback(f) => f(&update),
            Show::Terminal(bar) => {
                if bar.is_none() && update.elapsed >= SHOW_AFTER {
                    let b = Bar::with_draw_target(Some(update.total as u64), ProgressDrawTarget::stderr());
                    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} tasks  {elapsed} {msg}") {
                        b.set_style(style);
                    }
                    *bar = Some(b);
                }
                if let Some(b) = bar {
                    b.set_position(update.done as u64);
                    b.set_message(match update.eta {
                        Some(eta) => format!("(eta {}s)", eta.as_secs()),
                        None => String::new(),
                    });
                }
            }
        }
    }

    pub fn finish(&mut self) {
        if let Show::Terminal(bar) = &mut self.show
            && let Some(bar) = bar.take()
        {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_means_no_bar_and_no_wakeups() {
        let mut p = Progress::new(&ProgressBar::Never, 1000);
        assert!(p.next_tick().is_none(), "a waiting gather must not be woken for a bar it will not draw");
        p.update(10);
        p.finish();
    }

    #[test]
    fn auto_draws_only_on_a_terminal() {
        let p = Progress::new(&ProgressBar::Auto, 1000);
        assert_eq!(p.next_tick().is_some(), std::io::stderr().is_terminal());
    }

    #[test]
    fn the_eta_comes_from_the_observed_rate() {
        let start = Instant::now();
        let mut c = Counter::new(100, start);
        assert_eq!(c.at(start + Duration::from_secs(1)).eta, None, "no rate before the first task finished");
        c.update(25);
        let u = c.at(start + Duration::from_secs(10));
        assert_eq!((u.done, u.total), (25, 100));
        // 25 tasks in 10 s: 75 left take 30 s.
        assert_eq!(u.eta.map(|d| d.as_secs()), Some(30));
        c.update(10);
        assert_eq!(c.at(start).done, 25, "the count never goes back");
        c.update(500);
        assert_eq!(c.at(start + Duration::from_secs(20)).eta, Some(Duration::ZERO));
    }
}
