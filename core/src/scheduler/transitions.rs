//! The transitions: what each event does to the tasks it touches.
//!
//! Two counters on every record decide its fate (see [`super::record`]):
//! `client_refs` and `needers` (edges from dependents in `Waiting`, `Ready`
//! or `Processing`). A task is *needed* while either is non-zero.
//!
//! - A needed task in `Released` is started (`wake`): `Waiting` with a count
//!   of inputs not in memory, or `Ready`. Its `Released` inputs become
//!   needed in turn — which is how a lost result is recomputed from lineage.
//! - A task that is not needed (`settle`) stops: a result in memory is
//!   released on its holder, a task on its way is dropped back to
//!   `Released`. If, besides, no dependent is left (`live_dependents == 0`),
//!   it is forgotten, which removes its edges and may let its inputs go too.
//!
//! Both cascades run off worklists, never by recursion: graphs are deep.
//! Every entry point (`submit`, `handle`) ends with [`Scheduler::settle_all`],
//! which drains the worklists and then fills free worker slots.

use std::sync::Arc;

use super::record::needs_inputs;
use super::state::Scheduler;
use super::{Action, TaskId, TaskState, WorkerId};
use crate::failure::TaskFailure;

/// Entries of capacity a worklist keeps between calls.
const SCRATCH_KEEP: usize = 4096;

/// The failure a dependent's `DependencyFailed` should carry: the root.
fn root_of(failure: &Arc<TaskFailure>) -> Arc<TaskFailure> {
    match &**failure {
        TaskFailure::DependencyFailed { cause, .. } => cause.clone(),
        _ => failure.clone(),
    }
}

impl Scheduler {
    /// Runs the cascades the last transitions started, then dispatches.
    pub(super) fn settle_all(&mut self, out: &mut Vec<Action>) {
        // Waking can fail tasks (an erred input), which only pushes to
        // `settle`; settling only lowers needs, which never wakes anything.
        while let Some(t) = self.wake.pop() {
            self.start_if_needed(t, out);
        }
        while let Some(t) = self.settle.pop() {
            self.stop_if_unneeded(t, out);
        }
        // A big submission's worklists are not kept around.
        for list in [&mut self.wake, &mut self.settle] {
            if list.capacity() > SCRATCH_KEEP {
                *list = Vec::new();
            }
        }
        self.queue.end_batch();
        self.dispatch(out);
    }

    // ----- events -----------------------------------------------------------

    pub(super) fn task_finished(&mut self, t: TaskId, w: WorkerId, nbytes: u64, out: &mut Vec<Action>) {
        // A stale id: the driver drops the result of a task it was told to
        // forget; nothing here may touch the slot's new occupant.
        if !self.is_processing_on(t, w) {
            // An abandoned run's slot is free now.
            self.abandoned_answered(t, w);
        }
        let Some(r) = self.tasks.get(t) else { return };
        if r.state() != TaskState::Processing || r.worker != w {
            // Nobody waits for this run (cancelled, no longer needed, lost and
            // rescheduled, or a duplicate): release the copy it made, unless it
            // is the very copy the scheduler counts as held. A dead worker's
            // memory is gone already.
            let is_the_held_copy = r.state() == TaskState::Memory && r.worker == w;
            if !is_the_held_copy && self.workers.contains(w) {
                out.push(Action::Release { task: t, worker: w });
            }
            return;
        }
        self.stop_processing(t);
        self.tasks.set_state(t, TaskState::Memory);
        let r = self.tasks.at_mut(t);
        r.nbytes = nbytes;
        // `KilledWorker` counts deaths in a row: a good run ends the row,
        // and clears any suspicion.
        r.deaths = 0;
        if !self.suspects.is_empty() {
            self.suspects.remove(&t);
        }
        self.add_held(t, w);
        self.release_inputs(t);
        if self.tasks.at(t).client_refs > 0 {
            out.push(Action::ReportDone { task: t });
        }
        for k in 0..self.tasks.at(t).dependents.len() {
            let d = self.tasks.at(t).dependents[k];
            let Some(dep) = self.tasks.get_mut(d) else { continue };
            if dep.state() == TaskState::Waiting {
                *dep.missing() -= 1;
                if *dep.missing() == 0 {
                    self.enqueue(d);
                }
            }
        }
    }

    pub(super) fn task_failed(&mut self, t: TaskId, w: WorkerId, failure: TaskFailure, out: &mut Vec<Action>) {
        if !self.is_processing_on(t, w) {
            // A run nobody waits for any more; if it was abandoned, its slot
            // is free now.
            self.abandoned_answered(t, w);
            return;
        }
        // The run ended: its slot is free (and `fail` below finds no open
        // run to abandon).
        self.stop_processing(t);
        let r = self.tasks.at_mut(t);
        if failure.is_retryable() && r.retries > 0 {
            r.retries -= 1;
            self.enqueue(t);
        } else {
            self.fail(t, Arc::new(failure), out);
        }
    }

    pub(super) fn client_released(&mut self, t: TaskId) {
        let Some(r) = self.tasks.get_mut(t) else { return };
        // A release without a reference is a driver bug; ignoring it keeps
        // the counts of everyone else right.
        if r.client_refs > 0 {
            r.client_refs -= 1;
            if r.client_refs == 0 {
                self.settle.push(t);
            }
        }
    }

    pub(super) fn client_retained(&mut self, t: TaskId) {
        let Some(r) = self.tasks.get_mut(t) else { return };
        r.client_refs = r.client_refs.saturating_add(1);
        if r.state() == TaskState::Released {
            self.wake.push(t);
        }
    }

    pub(super) fn cancel(&mut self, t: TaskId, out: &mut Vec<Action>) {
        let Some(r) = self.tasks.get(t) else { return };
        let cancelled = TaskFailure::Cancelled { key: r.key() };
        match r.state() {
            // The result exists: the client's futures are marked cancelled,
            // the result stays for whoever else needs it; the references
            // still go away through `ClientReleased`.
            TaskState::Memory => {
                if r.client_refs > 0 {
                    out.push(Action::ReportFailed { task: t, failure: Arc::new(cancelled) });
                }
            }
            TaskState::Erred => {}
            _ => self.fail(t, Arc::new(cancelled), out),
        }
    }

    /// Everything `w` ran is rescheduled; a run known to have started
    /// (`TaskStarted`) counts a death against its task, which fails with
    /// `KilledWorker` once it has killed enough workers in a row, and a run
    /// not known to have started counts nothing but makes its task a
    /// suspect (see [`Scheduler::is_suspect`]). Everything `w` held moves to
    /// `heir` (`ProcessLost`: the results outlive the process) or is lost
    /// and recomputed if still needed. Its abandoned runs are gone with it.
    pub(super) fn worker_lost(&mut self, w: WorkerId, heir: Option<WorkerId>, out: &mut Vec<Action>) {
        let Some(mut worker) = self.workers.remove(w) else { return };
        self.unpark_all(std::mem::take(&mut worker.parked));
        // Results that outlive the process move to the heir.
        let heir = heir.filter(|&h| h != w && self.workers.contains(h));
        // Lost results first, so that the tasks it was running count their
        // missing inputs right when they are rescheduled below.
        for &t in &worker.held {
            debug_assert_eq!(self.tasks.at(t).state(), TaskState::Memory);
            if let Some(h) = heir {
                self.add_held(t, h);
                continue;
            }
            self.tasks.set_state(t, TaskState::Released);
            self.result_lost(t, w, out);
            self.wake.push(t);
        }
        for (&t, &started) in worker.processing.iter().zip(&worker.started) {
            debug_assert_eq!(self.tasks.at(t).state(), TaskState::Processing);
            if !started {
                // Maybe only queued there: innocent until its next run says
                // otherwise (Dask: a task is suspicious only if it was
                // executing). The driver learns that run's start before it
                // runs, so the next loss is judged exactly.
                self.suspects.insert(t);
                self.replan(t);
                continue;
            }
            let r = self.tasks.at_mut(t);
            r.deaths = r.deaths.saturating_add(1);
            let attempts = u32::from(r.deaths);
            if attempts >= self.config.max_worker_deaths.max(1) {
                let failure = TaskFailure::KilledWorker { key: r.key(), item: None, attempts };
                self.fail(t, Arc::new(failure), out);
            } else {
                self.replan(t);
            }
        }
    }

    // ----- the cascades -------------------------------------------------------

    /// `t`'s result (on `w`, now gone) is no longer in memory: dependents
    /// that were counting on it wait for it again. Dependents already
    /// running elsewhere are taken back too — they may not have fetched it,
    /// and a task only runs with all its inputs in memory; their runs'
    /// results will be released when they arrive.
    fn result_lost(&mut self, t: TaskId, w: WorkerId, out: &mut Vec<Action>) {
        for k in 0..self.tasks.at(t).dependents.len() {
            let d = self.tasks.at(t).dependents[k];
            let Some(dep) = self.tasks.get_mut(d) else { continue };
            match dep.state() {
                TaskState::Waiting => *dep.missing() += 1,
                TaskState::Ready => {
                    *dep.missing() = 1;
                    self.tasks.set_state(d, TaskState::Waiting);
                }
                // Tasks running on `w` itself are rescheduled by the caller.
                TaskState::Processing if dep.worker != w => {
                    self.abandon_run(d, out);
                    *self.tasks.at_mut(d).missing() = 1;
                    self.tasks.set_state(d, TaskState::Waiting);
                }
                _ => {}
            }
        }
    }

    /// A task that needs its inputs (and stays counted in their `needers`)
    /// goes back to `Ready` or `Waiting`, as its inputs are now; inputs that
    /// were lost are started again.
    fn replan(&mut self, t: TaskId) {
        let mut missing = 0;
        for k in 0..self.tasks.at(t).deps.len() {
            let d = self.tasks.at(t).deps[k];
            match self.tasks.at(d).state() {
                TaskState::Memory => {}
                TaskState::Released => {
                    missing += 1;
                    self.wake.push(d);
                }
                _ => missing += 1,
            }
        }
        if missing == 0 {
            self.enqueue(t);
        } else {
            *self.tasks.at_mut(t).missing() = missing;
            self.tasks.set_state(t, TaskState::Waiting);
        }
    }

    /// Starts `t` if it is `Released` and needed: it fails at once on a
    /// failed input, else waits for (and starts) the inputs not in memory.
    fn start_if_needed(&mut self, t: TaskId, out: &mut Vec<Action>) {
        let Some(r) = self.tasks.get(t) else { return };
        if r.state() != TaskState::Released || !r.is_needed() {
            return;
        }
        let erred_input = r.deps.iter().find_map(|&d| {
            let dep = self.tasks.at(d);
            (dep.state() == TaskState::Erred).then(|| self.tasks.failure(d).cloned()).flatten()
        });
        if let Some(input_failure) = erred_input {
            let failure = TaskFailure::DependencyFailed { key: r.key(), item: None, cause: root_of(&input_failure) };
            self.fail(t, Arc::new(failure), out);
            return;
        }
        for k in 0..self.tasks.at(t).deps.len() {
            let d = self.tasks.at(t).deps[k];
            self.tasks.at_mut(d).needers += 1;
        }
        self.tasks.set_state(t, TaskState::Waiting);
        self.replan(t);
    }

    /// Releases or forgets `t` if nothing needs it any more.
    fn stop_if_unneeded(&mut self, t: TaskId, out: &mut Vec<Action>) {
        let Some(r) = self.tasks.get(t) else { return };
        if r.is_needed() {
            return;
        }
        match r.state() {
            TaskState::Memory => {
                out.push(Action::Release { task: t, worker: r.worker });
                self.remove_held(t);
                self.tasks.set_state(t, TaskState::Released);
            }
            TaskState::Waiting | TaskState::Ready | TaskState::Processing => {
                if r.state() == TaskState::Processing {
                    self.abandon_run(t, out);
                }
                self.release_inputs(t);
                self.tasks.set_state(t, TaskState::Released);
            }
            TaskState::Released | TaskState::Erred => {}
        }
        if self.tasks.at(t).live_dependents == 0 {
            self.forget(t, out);
        }
    }

    /// `t` leaves the states that need inputs: each input loses a needer,
    /// and those needed by nobody any more are settled.
    fn release_inputs(&mut self, t: TaskId) {
        for k in 0..self.tasks.at(t).deps.len() {
            let d = self.tasks.at(t).deps[k];
            let dep = self.tasks.at_mut(d);
            debug_assert!(dep.needers > 0);
            dep.needers -= 1;
            if dep.needers == 0 && dep.client_refs == 0 {
                self.settle.push(d);
            }
        }
    }

    /// Removes the record of a task nothing refers to any more.
    fn forget(&mut self, t: TaskId, out: &mut Vec<Action>) {
        let r = self.tasks.at(t);
        debug_assert!(!r.is_needed() && r.live_dependents == 0);
        debug_assert!(matches!(r.state(), TaskState::Released | TaskState::Erred));
        for k in 0..self.tasks.at(t).deps.len() {
            let d = self.tasks.at(t).deps[k];
            if self.tasks.note_dependent_forgotten(d) == 0 {
                self.settle.push(d);
            }
        }
        self.keys.remove(&self.tasks.at(t).key(), t);
        if !self.suspects.is_empty() {
            self.suspects.remove(&t);
        }
        self.tasks.free(t);
        out.push(Action::Forget { task: t });
    }

    /// `t` fails with `failure`, and every task on its way that depends on
    /// it, directly or not, fails with `DependencyFailed` naming the root.
    fn fail(&mut self, t: TaskId, failure: Arc<TaskFailure>, out: &mut Vec<Action>) {
        let root = root_of(&failure);
        self.set_erred(t, failure, out);
        let mut stack = vec![t];
        while let Some(x) = stack.pop() {
            for k in 0..self.tasks.at(x).dependents.len() {
                let d = self.tasks.at(x).dependents[k];
                let Some(dep) = self.tasks.get(d) else { continue };
                // Finished dependents keep their results; `Released` ones need
                // nothing now and fail if they are ever started again.
                if needs_inputs(dep.state()) {
                    let failure = TaskFailure::DependencyFailed { key: dep.key(), item: None, cause: root.clone() };
                    self.set_erred(d, Arc::new(failure), out);
                    stack.push(d);
                }
            }
        }
    }

    fn set_erred(&mut self, t: TaskId, failure: Arc<TaskFailure>, out: &mut Vec<Action>) {
        let state = self.tasks.at(t).state();
        debug_assert!(!matches!(state, TaskState::Memory | TaskState::Erred));
        if state == TaskState::Processing {
            // Cancelled, or an input failed: the run is abandoned (a run that
            // ended or was lost is no longer open, and nothing happens).
            self.abandon_run(t, out);
        }
        if needs_inputs(state) {
            self.release_inputs(t);
        }
        if self.tasks.at(t).client_refs > 0 {
            out.push(Action::ReportFailed { task: t, failure: failure.clone() });
        }
        self.tasks.set_erred(t, failure);
        self.settle.push(t);
    }
}
