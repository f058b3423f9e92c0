//! Task keys: the stable, content-derived names of tasks.
//!
//! A key is the registered task's index in the [registry](crate::registry)
//! plus a 128-bit token. For a *pure* call the token is a hash of the task's
//! name and of its arguments (their rkyv bytes, or the keys of the futures
//! they name), so identical calls share one key and one result, as in Dask.
//! For an impure call the token is drawn from a process-wide counter mixed
//! with a random seed. Keys print as `name-<32 hex digits>`, like Dask's
//! `count_letters-3f1c…`.
//!
//! The registry index is stable across processes because every process of a
//! cluster runs the same binary (checked by the registry fingerprint), so a
//! key means the same thing everywhere.

use std::fmt;

/// The name of a task: which registered function, and which call of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Index of the task function in the sorted registry.
    pub func: u32,
    /// The call's token: high and low 64 bits of a 128-bit hash.
    pub token: [u64; 2],
}

impl Key {
    /// The registered name of this key's function (`"?"` if out of range,
    /// which only a key from a different binary can be).
    pub fn func_name(&self) -> &'static str {
        crate::registry::entries().get(self.func as usize).map(|e| e.name()).unwrap_or("?")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.func_name().rsplit("::").next().unwrap_or("?");
        write!(f, "{short}-{:016x}{:016x}", self.token[0], self.token[1])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
