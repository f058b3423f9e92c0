//! The scheduler server's backend: what the driver keeps per task (its
//! arguments, kept as lineage, and its result), the connected workers and
//! clients, and how the scheduler's actions become messages.
//!
//! Results live here, in the scheduler (a star, as in the processes mode
//! where the client holds them): a worker sends each result back, a run
//! gets its inputs with it, a client gathers from here. So a lost worker
//! loses no result (`Event::ProcessLost` hands them to [`STORE`]), only its
//! runs, which are recomputed elsewhere. Peer-to-peer transfers between
//! machines come next and will change where results live.
//!
//! Nothing here does I/O: actions become [`Effects`] (runs to encode and
//! send, task news for clients, objects to drop), carried out by
//! [`carry_out`] after the driver's lock is released; sending is pushing
//! onto a connection's queue, which its writer task drains.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::driver::pacing::Pacing;
use shoal_core::driver::{Backend, Driver, SpecArg, Status};
use shoal_core::object::{Input, Obj};
use shoal_core::protocol::Run;
use shoal_core::scheduler::{Event, TaskId, WorkerId};
use tokio::sync::mpsc::UnboundedSender;

use crate::conn::Outgoing;
use crate::wire::{
    self, MAX_ITEMS, ObjectsOut, ToClientMsg, ToWorkerMsg, WireFigures, WireInput, WireRun, WireStatus, WireTask,
};

/// The scheduler's own store, as the scheduler state machine sees it: a
/// worker without threads that holds the results of workers that were
/// lost (they live here, not in the worker).
pub const STORE: WorkerId = WorkerId(u32::MAX);

/// The driver of the scheduler server.
pub type ClusterDriver = Driver<Cluster>;
pub(crate) type State = shoal_core::driver::State<Cluster>;

/// A worker connection.
pub struct WorkerLink {
    /// Its writer's queue.
    pub tx: UnboundedSender<Outgoing>,
    /// Its threads.
    pub nthreads: u32,
    /// Its process id.
    pub pid: u32,
    /// Its host name, memory and CPU time, as it last reported them.
    pub figures: WireFigures,
}

/// A client connection and the futures it holds.
pub struct ClientLink {
    /// Its writer's queue.
    pub tx: UnboundedSender<Outgoing>,
    /// Client references it holds, per task: released when it disconnects.
    pub refs: HashMap<TaskId, u32>,
}

/// The backend: connections, and the fingerprint the cluster runs.
#[derive(Default)]
pub struct Cluster {
    /// Connected workers.
    pub workers: HashMap<WorkerId, WorkerLink>,
    /// Connected clients, by id.
    pub clients: HashMap<u32, ClientLink>,
    /// The registry fingerprint every peer must have, and who set it: the
    /// first peer to connect while none is connected.
    pub fingerprint: Option<(u128, String)>,
    /// Connected peers (clients and workers) that passed the handshake.
    pub peers: usize,
    /// How many runs workers queue, from how long runs take.
    pub pacing: Option<Pacing>,
    /// The short names of the registry's tasks, by `Key::func`, as the
    /// first client told them (the scheduler has no user code); kept while
    /// any peer is connected, as the fingerprint is.
    pub names: Vec<String>,
    /// Bytes of the results held here (the dashboard's store).
    pub held: u64,
}

/// What the driver keeps per task.
pub struct Task {
    func: u32,
    /// The lineage a lost result is recomputed from.
    args: Box<[SpecArg]>,
    /// The result, and the worker the scheduler counts as holding it.
    pub result: Option<(Obj, WorkerId)>,
}

/// A client's queue, and the news of tasks to send it.
type News = (UnboundedSender<Outgoing>, Vec<(WireTask, WireStatus)>);

/// What a pass leaves to do after unlocking.
#[derive(Default)]
pub struct Effects {
    runs: Vec<(WorkerId, Run)>,
    /// News per client: its queue and `(task, status)` pairs.
    news: HashMap<u32, News>,
    /// Events to feed back (runs that could not be built).
    failures: Vec<Event>,
    /// Dropped after unlocking.
    garbage: Vec<Obj>,
    forgotten: Vec<Task>,
}

impl shoal_core::driver::Effects for Effects {
    fn wake_clients(&mut self) {
        // No client thread waits on this driver: clients get news by message.
    }
}

impl Backend for Cluster {
    type Task = Task;
    type Effects = Effects;

    fn new_task(&mut self, func: u32, args: Box<[SpecArg]>) -> Task {
        Task { func, args, result: None }
    }

    fn run(st: &mut State, task: TaskId, worker: WorkerId, fx: &mut Effects) {
        let Some(spec) = st.spec(task) else { return };
        let result_of = |dep: &TaskId| st.spec(*dep).and_then(|s| s.task.result.as_ref()).map(|(o, _)| Arc::clone(o));
        let inputs: Option<Vec<Input>> = spec
            .task
            .args
            .iter()
            .map(|arg| match arg {
                SpecArg::Value(obj) => Some(Input::One(Arc::clone(obj))),
                SpecArg::Dep(dep) => result_of(dep).map(Input::One),
                SpecArg::List(deps) => deps.iter().map(result_of).collect::<Option<Vec<_>>>().map(Input::List),
            })
            .collect();
        match inputs {
            Some(inputs) => {
                let moved = inputs
                    .iter()
                    .map(|i| match i {
                        Input::One(obj) => obj.nbytes(),
                        Input::List(objs) => objs.iter().map(|o| o.nbytes()).sum(),
                    })
                    .sum();
                let func = spec.task.func;
                let report_start = st.sched.is_suspect(task);
                st.events.transferred(moved);
                fx.runs.push((worker, Run { task, func, inputs, report_start }))
            }
            None => {
                let key = st.sched.key(task).unwrap_or(shoal_core::Key { func: u32::MAX, token: [0; 2] });
                let failure =
                    shoal_core::TaskFailure::error(key, "internal error: an input is not in the scheduler's memory");
                fx.failures.push(Event::TaskFailed { task, worker, failure });
            }
        }
    }

    fn release(st: &mut State, task: TaskId, worker: WorkerId, fx: &mut Effects) {
        if let Some(spec) = st.spec_mut(task)
            && spec.task.result.as_ref().is_some_and(|(_, w)| *w == worker)
            && let Some((obj, _)) = spec.task.result.take()
        {
            st.backend.held = st.backend.held.saturating_sub(obj.nbytes());
            fx.garbage.push(obj);
        }
    }

    fn forget(&mut self, mut spec: shoal_core::driver::Spec<Task>, fx: &mut Effects) {
        if let Some((obj, _)) = spec.task.result.take() {
            self.held = self.held.saturating_sub(obj.nbytes());
            fx.garbage.push(obj);
        }
        fx.forgotten.push(spec.task);
    }

    fn report(st: &mut State, task: TaskId, fx: &mut Effects) {
        let Some(status) = status_now(st, task) else { return };
        let small = match &status {
            WireStatus::Finished(Some(bytes)) => bytes.len() as u64,
            _ => 0,
        };
        let holders: Vec<(u32, UnboundedSender<Outgoing>)> = st
            .backend
            .clients
            .iter()
            .filter(|(_, c)| c.refs.get(&task).is_some_and(|&n| n > 0))
            .map(|(&id, c)| (id, c.tx.clone()))
            .collect();
        let mut status = Some(status);
        let n = holders.len();
        // Small results travel with the news, to every holder.
        st.events.transferred(small * n as u64);
        for (i, (id, tx)) in holders.into_iter().enumerate() {
            // The last holder takes the status itself; the others a copy.
            let s = if i + 1 == n { status.take() } else { status.clone() };
            if let Some(s) = s {
                fx.news.entry(id).or_insert_with(|| (tx, Vec::new())).1.push((task.into(), s));
            }
        }
    }
}

/// The news of `task` for its futures, if it is finished (with its result
/// if small: see [`wire::NEWS_RESULT_MAX`]).
pub fn status_now(st: &State, task: TaskId) -> Option<WireStatus> {
    match st.status(task) {
        Status::Finished => {
            let small = st
                .spec(task)
                .and_then(|spec| spec.task.result.as_ref())
                .and_then(|(obj, _)| obj.archived_bytes().ok())
                .filter(|bytes| bytes.len() <= wire::NEWS_RESULT_MAX)
                .map(<[u8]>::to_vec);
            Some(WireStatus::Finished(small))
        }
        Status::Failed(failure) => Some(WireStatus::Failed(wire::failure_out(&failure))),
        Status::Pending => None,
    }
}

/// Carries out what a driver pass left to do (after unlocking): sends runs
/// (batched per worker) and news, drops released results, and feeds back
/// the failures of runs that could not be sent.
pub fn carry_out(driver: &ClusterDriver, mut fx: Effects) {
    loop {
        drop(std::mem::take(&mut fx.garbage));
        drop(std::mem::take(&mut fx.forgotten));
        for (_, (tx, news)) in fx.news.drain() {
            for part in chunks(news) {
                if let Ok(body) = wire::to_bytes(&ToClientMsg::Status(part)) {
                    let _ = tx.send(Outgoing::message(body));
                }
            }
        }
        let failures = send_runs(driver, std::mem::take(&mut fx.runs));
        fx.failures.extend(failures);
        if fx.failures.is_empty() {
            return;
        }
        let events = std::mem::take(&mut fx.failures);
        let mut st = driver.lock();
        for event in events {
            st.handle(event, &mut fx);
        }
    }
}

fn chunks<T>(mut items: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while items.len() > MAX_ITEMS {
        let rest = items.split_off(MAX_ITEMS);
        out.push(std::mem::replace(&mut items, rest));
    }
    out.push(items);
    out
}

/// Encodes and queues the runs of one pass, one batch (or a few messages)
/// per worker; the failure events of runs whose inputs could not be encoded.
fn send_runs(driver: &ClusterDriver, runs: Vec<(WorkerId, Run)>) -> Vec<Event> {
    if runs.is_empty() {
        return Vec::new();
    }
    let mut failures = Vec::new();
    let mut per_worker: Vec<(WorkerId, Vec<Run>)> = Vec::new();
    for (worker, run) in runs {
        match per_worker.iter_mut().find(|(w, _)| *w == worker) {
            Some((_, list)) => list.push(run),
            None => per_worker.push((worker, vec![run])),
        }
    }
    let queues: Vec<Option<UnboundedSender<Outgoing>>> = {
        let st = driver.lock();
        per_worker.iter().map(|(w, _)| st.backend.workers.get(w).map(|l| l.tx.clone())).collect()
    };
    for ((worker, runs), tx) in per_worker.into_iter().zip(queues) {
        // A worker gone meanwhile: its reader reports the loss, and the
        // scheduler takes its runs back then.
        let Some(tx) = tx else { continue };
        let mut out = ObjectsOut::default();
        let mut batch = Vec::new();
        for run in runs {
            let inputs: Result<Vec<WireInput>, String> = run
                .inputs
                .iter()
                .map(|input| match input {
                    Input::One(obj) => out.object(obj).map(WireInput::One),
                    Input::List(items) => {
                        items.iter().map(|o| out.object(o)).collect::<Result<_, _>>().map(WireInput::List)
                    }
                })
                .collect();
            match inputs {
                Ok(inputs) => batch.push(WireRun {
                    task: run.task.into(),
                    func: run.func,
                    inputs,
                    report_start: run.report_start,
                }),
                Err(message) => {
                    let key = driver.key(run.task).unwrap_or(shoal_core::Key { func: u32::MAX, token: [0; 2] });
                    let failure = shoal_core::TaskFailure::error(key, format!("could not send its inputs: {message}"));
                    failures.push(Event::TaskFailed { task: run.task, worker, failure });
                }
            }
            if batch.len() >= MAX_ITEMS || out.inline_bytes() >= wire::INLINE_BUDGET {
                queue_runs(&tx, std::mem::take(&mut batch), std::mem::take(&mut out));
            }
        }
        if !batch.is_empty() {
            queue_runs(&tx, batch, out);
        }
    }
    failures
}

fn queue_runs(tx: &UnboundedSender<Outgoing>, batch: Vec<WireRun>, out: ObjectsOut) {
    match wire::to_bytes(&ToWorkerMsg::Runs(batch)) {
        Ok(body) => {
            let _ = tx.send(Outgoing::Message { body, blobs: out.blobs });
        }
        Err(e) => tracing::error!("could not encode runs for a worker: {e}"),
    }
}
