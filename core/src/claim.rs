//! A queued run's claim: it starts here or is given back, never both.
//!
//! A worker queues each run it receives with a [`Claim`], `QUEUED`. A pool
//! thread that pops the run calls [`Claim::start`] before touching it; the
//! thread answering a steal calls [`Claim::steal`]. Each is one
//! compare-and-swap from `QUEUED` on the same atomic, so exactly one of
//! them succeeds: a stolen run is never started, and a started run is never
//! given back. (`tests/loom.rs` checks it under every interleaving.)

#[cfg(loom)]
use loom::sync::atomic::{AtomicU8, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU8, Ordering};

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const STOLEN: u8 = 2;

/// The claim on one queued run (see the module docs).
#[derive(Debug)]
pub struct Claim(AtomicU8);

impl Claim {
    /// A claim on a run just queued: neither started nor stolen.
    pub fn new() -> Claim {
        Claim(AtomicU8::new(QUEUED))
    }

    /// Claims the run to start it; `false` if it was stolen (or started)
    /// already. Acquire-release: whatever the winner wrote before is seen by
    /// whoever reads the claim after.
    pub fn start(&self) -> bool {
        self.0.compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Claims the run to give it back; `false` if it started (or was stolen)
    /// already.
    pub fn steal(&self) -> bool {
        self.0.compare_exchange(QUEUED, STOLEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Whether neither claim was made yet.
    pub fn is_queued(&self) -> bool {
        self.0.load(Ordering::Acquire) == QUEUED
    }
}

impl Default for Claim {
    fn default() -> Claim {
        Claim::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_claim_wins() {
        let c = Claim::new();
        assert!(c.is_queued());
        assert!(c.start());
        assert!(!c.steal() && !c.start() && !c.is_queued());
        let c = Claim::new();
        assert!(c.steal());
        assert!(!c.start() && !c.steal());
    }
}
