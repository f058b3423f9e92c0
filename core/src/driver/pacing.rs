//! How many runs to queue on each worker thread, learned from how long
//! runs take: a driver notes each run's duration (as the worker measured
//! it) and sets the scheduler's `extra_slots_per_thread`
//! (`Event::Saturation`) to about [`QUEUE_MICROS`] of work per thread —
//! deep queues for microsecond tasks, whose cost is the message per batch,
//! shallow ones for long tasks, so priorities keep their say.
//!
//! Used by the processes engine and the cluster's scheduler alike.

/// Work to keep queued per worker thread, in microseconds of runs: many
/// round trips' worth, so that runs and results travel in large batches.
pub const QUEUE_MICROS: f64 = 1_000.0;
/// Bounds of the `extra_slots_per_thread` that [`Pacing`] sets.
pub const MIN_EXTRA_SLOTS: u32 = 1;
/// See [`MIN_EXTRA_SLOTS`].
pub const MAX_EXTRA_SLOTS: u32 = 64;

/// The moving average of run durations, and the saturation it implies.
pub struct Pacing {
    mean_micros: Option<f64>,
    extra: u32,
}

impl Pacing {
    /// Starting from `extra` slots per thread.
    pub fn new(extra: u32) -> Pacing {
        Pacing { mean_micros: None, extra }
    }

    /// Notes how long one run took.
    pub fn note(&mut self, micros: u32) {
        let x = f64::from(micros);
        self.mean_micros = Some(self.mean_micros.map_or(x, |m| m + (x - m) / 8.0));
    }

    /// The new `extra_slots_per_thread`, if it should change: only by a
    /// factor of two or more, so that noise does not churn it.
    pub fn update(&mut self) -> Option<u32> {
        let per_thread = (QUEUE_MICROS / self.mean_micros?.max(1.0)).round();
        // In range after the clamp: the cast cannot truncate.
        let want = (per_thread - 1.0).clamp(f64::from(MIN_EXTRA_SLOTS), f64::from(MAX_EXTRA_SLOTS)) as u32;
        if want >= self.extra.saturating_mul(2) || want.saturating_mul(2) <= self.extra {
            self.extra = want;
            return Some(want);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_queue_deep_and_long_ones_shallow() {
        let mut pacing = Pacing::new(4);
        assert_eq!(pacing.update(), None, "nothing measured yet");
        for micros in [1, 2, 1, 1] {
            pacing.note(micros);
        }
        assert_eq!(pacing.update(), Some(MAX_EXTRA_SLOTS));
        assert_eq!(pacing.update(), None, "no change, no event");
        for _ in 0..60 {
            pacing.note(250_000);
        }
        assert_eq!(pacing.update(), Some(MIN_EXTRA_SLOTS));
    }
}
