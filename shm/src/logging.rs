//! Where shoal's logs go when the program did not say.
//!
//! Every crate of shoal reports through `tracing` events (targets
//! `shoal`, `shoal_core::…`, `shoal_shm::…`, `shoal_net::…`). A library must
//! not take the program's logging over, so a subscriber is installed only
//! where no one else did: [`install_default`] does nothing if the program
//! installed its own global subscriber first. A worker process never runs
//! the program's `main`, so it always installs this one.
//!
//! The default: human-readable lines on stderr, filtered by `RUST_LOG` as
//! `env_logger` users know it (`RUST_LOG=shoal=debug` shows every task's
//! run, result and failure), or [`DEFAULT_FILTER`] when it is unset or
//! invalid.

use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// What is shown when `RUST_LOG` says nothing: shoal's warnings (a lost
/// worker, a spill that failed, a refused peer) and errors, as
/// `eprintln!` showed them before.
pub const DEFAULT_FILTER: &str = "warn";

/// Installs shoal's stderr subscriber unless a global subscriber exists
/// already (the program's own, or ours). Cheap to call again.
pub fn install_default() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if tracing::dispatcher::has_been_set() {
            return;
        }
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        // Colours only for a person at a terminal (and not with NO_COLOR).
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
        // Fails only if another thread set one meanwhile: theirs stays.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(true)
            .try_init();
    });
}
