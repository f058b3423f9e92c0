//! The terminal progress bar of long `gather` and `compute` calls.
//!
//! Drawn on stderr with indicatif, only when stderr is a terminal, only
//! after the call has run for [`SHOW_AFTER`] (short calls never flicker),
//! and never when the client's options say so.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar as Bar, ProgressDrawTarget, ProgressStyle};

use crate::client::ProgressBar;

/// A call shorter than this draws nothing.
const SHOW_AFTER: Duration = Duration::from_millis(500);
/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(100);

pub(crate) struct Progress {
    /// `None` when no bar may be drawn at all.
    enabled: Option<Started>,
}

struct Started {
    total: usize,
    start: Instant,
    bar: Option<Bar>,
}

impl Progress {
    pub fn new(mode: ProgressBar, total: usize) -> Progress {
        let enabled = (mode == ProgressBar::Auto && std::io::stderr().is_terminal()).then(|| Started {
            total,
            start: Instant::now(),
            bar: None,
        });
        Progress { enabled }
    }

    /// When the waiting caller should wake to redraw (`None`: never).
    pub fn next_tick(&self) -> Option<Instant> {
        self.enabled.as_ref().map(|_| Instant::now() + TICK)
    }

    /// `done` items have finished.
    pub fn update(&mut self, done: usize) {
        let Some(s) = &mut self.enabled else { return };
        if s.bar.is_none() && s.start.elapsed() >= SHOW_AFTER {
            let bar = Bar::with_draw_target(Some(s.total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} tasks  {elapsed} (eta {eta})") {
                bar.set_style(style);
            }
            s.bar = Some(bar);
        }
        if let Some(bar) = &s.bar {
            bar.set_position(done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.enabled.as_mut().and_then(|s| s.bar.take()) {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_means_no_bar_and_no_wakeups() {
        let mut p = Progress::new(ProgressBar::Never, 1000);
        assert!(p.next_tick().is_none(), "a waiting gather must not be woken for a bar it will not draw");
        p.update(10);
        p.finish();
    }

    #[test]
    fn auto_draws_only_on_a_terminal() {
        let p = Progress::new(ProgressBar::Auto, 1000);
        assert_eq!(p.next_tick().is_some(), std::io::stderr().is_terminal());
    }
}
