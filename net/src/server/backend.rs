//! The scheduler server's backend: what the driver keeps per task (its
//! arguments, kept as lineage, and its result), the connected workers and
//! clients, and how the scheduler's actions become messages.
//!
//! **Results live on the workers that made them**; the scheduler keeps
//! where each one is and its size ([`Held`]). A run's input is named by
//! its place: with the run (literals, and small results — at most
//! [`wire::ALWAYS_INLINE`] bytes — which workers send here and the
//! scheduler keeps), in the store of the worker that runs it, or on another
//! worker, whose data address the run carries: that worker fetches it
//! directly (`crate::data`) and keeps a copy, which the scheduler notes
//! ([`Held::copies`]) so that releasing the result releases every copy.
//! A lost worker's results are gone with it: `Event::WorkerLost`, and
//! they are recomputed from lineage if still needed — unless it held only
//! small results, which live on here (`Event::ProcessLost` to [`STORE`]).
//!
//! Nothing here does I/O: actions become [`Effects`] (runs to encode and
//! send, task news for clients, objects to drop), carried out by
//! [`carry_out`] after the driver's lock is released; sending is pushing
//! onto a connection's queue, which its writer task drains.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::driver::pacing::Pacing;
use shoal_core::driver::{Backend, Driver, SpecArg, Status};
use shoal_core::object::Obj;
use shoal_core::scheduler::{Event, SeededState, TaskId, WorkerId};
use tokio::sync::mpsc::UnboundedSender;

use crate::conn::Outgoing;
use crate::wire::{
    self, MAX_ITEMS, ObjectsOut, ToClientMsg, ToWorkerMsg, WireFigures, WireInput, WireRun, WireSource, WireStatus,
    WireTask,
};

/// The scheduler's own store, as the scheduler state machine sees it: a
/// worker without threads that holds the small results of workers that
/// were lost (they live here, not in the worker).
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
    /// Where peers fetch the results it holds (`ip:port`).
    pub data: Option<Arc<str>>,
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
    /// Touched per task submitted and released: a fast seeded hasher.
    pub refs: HashMap<TaskId, u32, SeededState>,
}

/// The backend: connections, and the fingerprint the cluster runs.
#[derive(Default)]
pub struct Cluster {
    /// Connected workers.
    pub workers: HashMap<WorkerId, WorkerLink, SeededState>,
    /// Connected clients, by id.
    pub clients: HashMap<u32, ClientLink, SeededState>,
    /// The registry fingerprint every peer must have, and who set it: the
    /// first peer to connect while none is connected.
    pub fingerprint: Option<(u128, String)>,
    /// Connected peers (clients and workers) that passed the handshake.
    pub peers: usize,
    /// How many runs workers queue, from how long runs take.
    pub pacing: Option<Pacing>,
    /// Transfers counted for tests and monitoring.
    pub counts: Counts,
    /// The short names of the registry's tasks, by `Key::func`, as the
    /// first client told them (the scheduler has no user code); kept while
    /// any peer is connected, as the fingerprint is.
    pub names: Vec<String>,
    /// Bytes of the results held here (the dashboard's store).
    pub held: u64,
    /// The bandwidth between machines, measured from the workers' fetches.
    pub network: Network,
}

/// Fetches smaller than this (bytes between two figures of a worker) say
/// more about latency than bandwidth: not taken as a sample.
pub const BANDWIDTH_SAMPLE_MIN: u64 = 1 << 20;
/// The weight of a new sample in the bandwidth estimate (as run times'
/// means: the estimate follows a change within a few samples).
const BANDWIDTH_WEIGHT: f64 = 0.5;

/// The bandwidth one worker's fetches showed between two of its figures,
/// in bytes per second, if they moved enough bytes to tell.
pub fn bandwidth_sample(before: &WireFigures, now: &WireFigures) -> Option<f64> {
    let bytes = now.fetched_bytes.checked_sub(before.fetched_bytes)?;
    let micros = now.fetch_micros.checked_sub(before.fetch_micros)?;
    (bytes >= BANDWIDTH_SAMPLE_MIN && micros > 0).then(|| bytes as f64 / (micros as f64 / 1e6))
}

/// The measured bandwidth between machines (see `Event::Network`).
#[derive(Debug, Default)]
pub struct Network {
    /// Bytes per second; `None` until a sample.
    pub bandwidth: Option<f64>,
}

impl Network {
    /// Takes one sample; the event that tells the scheduler.
    pub fn sample(&mut self, bytes_per_second: f64) -> Option<Event> {
        if !(bytes_per_second.is_finite() && bytes_per_second > 0.0) {
            return None;
        }
        let b = match self.bandwidth {
            Some(b) => (1.0 - BANDWIDTH_WEIGHT) * b + BANDWIDTH_WEIGHT * bytes_per_second,
            None => bytes_per_second,
        };
        self.bandwidth = Some(b);
        Some(Event::Network { bandwidth: b as u64, latency_micros: shoal_core::scheduler::DEFAULT_LATENCY_MICROS })
    }
}

/// What moved where, since the scheduler started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Run inputs named on another worker (each one a fetch, unless the
    /// worker had a copy already).
    pub remote_inputs: u64,
    /// Bytes of the results that held on other workers were named for.
    pub remote_bytes: u64,
    /// Bytes of results the scheduler received (small ones only).
    pub result_bytes_received: u64,
    /// Runs asked back from a busy worker for an idle one
    /// (`Action::TakeBack`), and those given back.
    pub asked_back: u64,
    /// Runs a worker gave back when asked (each then runs elsewhere).
    pub given_back: u64,
}

/// Where a task's result is.
pub struct Held {
    /// The task whose result it is.
    pub task: TaskId,
    /// The worker the scheduler counts as holding it.
    pub holder: WorkerId,
    /// The result itself when it is small: the scheduler keeps those.
    pub small: Option<Obj>,
    /// Its archive's size.
    pub nbytes: u64,
    /// Workers that fetched a copy (released with the result).
    pub copies: Vec<WorkerId>,
}

/// What the driver keeps per task.
pub struct Task {
    func: u32,
    /// The lineage a lost result is recomputed from.
    args: Box<[SpecArg]>,
    /// Where its result is.
    pub result: Option<Held>,
}

/// Where a run finds one input.
pub enum Source {
    /// Sent with the run.
    Object(Obj),
    /// In the running worker's store.
    Local(TaskId),
    /// On another worker, at this data address.
    Remote(TaskId, Arc<str>),
}

/// A run to send: inputs by place.
pub struct NetRun {
    task: TaskId,
    func: u32,
    inputs: Vec<(bool, Vec<Source>)>,
    report_start: bool,
}

/// A client's queue, and the news of tasks to send it.
type News = (UnboundedSender<Outgoing>, Vec<(WireTask, WireStatus)>);

/// What a pass leaves to do after unlocking.
#[derive(Default)]
pub struct Effects {
    runs: Vec<(WorkerId, NetRun)>,
    /// Results (and copies) workers are to drop.
    releases: HashMap<WorkerId, Vec<WireTask>>,
    /// Runs to ask back, by the worker that has them (sent after the
    /// pass's runs: a run is never asked back before it is sent).
    take_backs: HashMap<WorkerId, Vec<WireTask>>,
    /// News per client: its queue and `(task, status)` pairs.
    news: HashMap<u32, News>,
    /// Events to feed back (runs that could not be built).
    failures: Vec<Event>,
    /// Dropped after unlocking.
    garbage: Vec<Obj>,
    forgotten: Vec<Task>,
}

impl Effects {
    /// A result nobody needs: dropped here if small, else by its holder and
    /// every worker that fetched a copy.
    pub fn drop_held(&mut self, held: Held) {
        let task = held.task;
        match held.small {
            Some(obj) => self.garbage.push(obj),
            None => self.releases.entry(held.holder).or_default().push(task.into()),
        }
        for copy in held.copies {
            self.releases.entry(copy).or_default().push(task.into());
        }
    }
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
        let place = |dep: TaskId| -> Option<(Source, u64)> {
            let held = st.spec(dep)?.task.result.as_ref()?;
            Some(match &held.small {
                Some(obj) => (Source::Object(Arc::clone(obj)), 0),
                None if held.holder == worker => (Source::Local(dep), 0),
                None => (Source::Remote(dep, st.backend.workers.get(&held.holder)?.data.clone()?), held.nbytes),
            })
        };
        let mut fetched = Vec::new();
        let mut place_noting = |dep: &TaskId| {
            let (source, nbytes) = place(*dep)?;
            if matches!(source, Source::Remote(..)) {
                fetched.push((*dep, nbytes));
            }
            Some(source)
        };
        let inputs: Option<Vec<(bool, Vec<Source>)>> = spec
            .task
            .args
            .iter()
            .map(|arg| match arg {
                SpecArg::Value(obj) => Some((false, vec![Source::Object(Arc::clone(obj))])),
                SpecArg::Dep(dep) => place_noting(dep).map(|s| (false, vec![s])),
                SpecArg::List(deps) => {
                    deps.iter().map(&mut place_noting).collect::<Option<Vec<_>>>().map(|l| (true, l))
                }
            })
            .collect();
        let func = spec.task.func;
        match inputs {
            Some(inputs) => {
                let moved = inputs
                    .iter()
                    .flat_map(|(_, sources)| sources.iter())
                    .map(|source| match source {
                        Source::Object(obj) => obj.nbytes(),
                        _ => 0,
                    })
                    .sum();
                st.events.transferred(moved);
                // The worker keeps the copies it fetches: released with the result.
                for (dep, nbytes) in fetched {
                    st.backend.counts.remote_inputs += 1;
                    st.backend.counts.remote_bytes += nbytes;
                    if let Some(held) = st.spec_mut(dep).and_then(|s| s.task.result.as_mut())
                        && !held.copies.contains(&worker)
                    {
                        held.copies.push(worker);
                    }
                }
                let report_start = st.sched.is_suspect(task);
                fx.runs.push((worker, NetRun { task, func, inputs, report_start }))
            }
            None => {
                let key = st.sched.key(task).unwrap_or(shoal_core::Key { func: u32::MAX, token: [0; 2] });
                let failure = shoal_core::TaskFailure::error(
                    key,
                    "internal error: the scheduler does not know where an input is (a shoal bug: please report it)",
                );
                fx.failures.push(Event::TaskFailed { task, worker, failure });
            }
        }
    }

    fn release(st: &mut State, task: TaskId, worker: WorkerId, fx: &mut Effects) {
        let held = match st.spec_mut(task) {
            Some(spec) if spec.task.result.as_ref().is_some_and(|h| h.holder == worker) => spec.task.result.take(),
            _ => None,
        };
        match held {
            Some(held) => {
                st.backend.held = st.backend.held.saturating_sub(held.small.as_ref().map_or(0, |o| o.nbytes()));
                fx.drop_held(held)
            }
            // A copy the scheduler does not count (a late result): the
            // worker drops it.
            None => fx.releases.entry(worker).or_default().push(task.into()),
        }
    }

    /// Asks `from` for the run back (`Recall`, which its worker runtime
    /// answers with `Recalled` for the runs it gives back and by the result
    /// for the others).
    fn take_back(st: &mut State, task: TaskId, from: WorkerId, _to: WorkerId, fx: &mut Effects) {
        st.backend.counts.asked_back += 1;
        fx.take_backs.entry(from).or_default().push(task.into());
    }

    fn forget(&mut self, mut spec: shoal_core::driver::Spec<Task>, fx: &mut Effects) {
        if let Some(held) = spec.task.result.take() {
            self.held = self.held.saturating_sub(held.small.as_ref().map_or(0, |o| o.nbytes()));
            fx.drop_held(held);
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
                .and_then(|held| held.small.as_ref())
                .and_then(|obj| obj.archived_bytes().ok())
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
        send_releases(driver, std::mem::take(&mut fx.releases));
        let failures = send_runs(driver, std::mem::take(&mut fx.runs));
        fx.failures.extend(failures);
        send_per_worker(driver, std::mem::take(&mut fx.take_backs), ToWorkerMsg::Recall, "asks for runs back");
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

/// Queues the releases of one pass, one message (or a few) per worker.
fn send_releases(driver: &ClusterDriver, releases: HashMap<WorkerId, Vec<WireTask>>) {
    send_per_worker(driver, releases, ToWorkerMsg::Release, "releases");
}

/// Queues lists of tasks for workers, as `message`s of at most
/// [`MAX_ITEMS`] each (`what` names them in a log line).
fn send_per_worker(
    driver: &ClusterDriver,
    lists: HashMap<WorkerId, Vec<WireTask>>,
    message: fn(Vec<WireTask>) -> ToWorkerMsg,
    what: &str,
) {
    if lists.is_empty() {
        return;
    }
    let queues: Vec<(Option<UnboundedSender<Outgoing>>, Vec<WireTask>)> = {
        let st = driver.lock();
        lists.into_iter().map(|(w, tasks)| (st.backend.workers.get(&w).map(|l| l.tx.clone()), tasks)).collect()
    };
    for (tx, tasks) in queues {
        // A worker gone: its store and its runs went with it.
        let Some(tx) = tx else { continue };
        for part in chunks(tasks) {
            match wire::to_bytes(&message(part)) {
                Ok(body) => {
                    let _ = tx.send(Outgoing::message(body));
                }
                Err(e) => tracing::error!("could not encode {what} for a worker: {e}"),
            }
        }
    }
}

/// Encodes and queues the runs of one pass, one batch (or a few messages)
/// per worker; the failure events of runs whose inputs could not be encoded.
fn send_runs(driver: &ClusterDriver, runs: Vec<(WorkerId, NetRun)>) -> Vec<Event> {
    if runs.is_empty() {
        return Vec::new();
    }
    let mut failures = Vec::new();
    let mut per_worker: Vec<(WorkerId, Vec<NetRun>)> = Vec::new();
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
            let mut source = |s: &Source| -> Result<WireSource, String> {
                Ok(match s {
                    Source::Object(obj) => WireSource::Object(out.object(obj)?),
                    Source::Local(task) => WireSource::Local((*task).into()),
                    Source::Remote(task, address) => {
                        WireSource::Remote { task: (*task).into(), address: address.to_string() }
                    }
                })
            };
            let inputs: Result<Vec<WireInput>, String> = run
                .inputs
                .iter()
                .map(|(list, sources)| match (list, sources.as_slice()) {
                    (false, [one]) => source(one).map(WireInput::One),
                    _ => sources.iter().map(&mut source).collect::<Result<_, _>>().map(WireInput::List),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(fetched_bytes: u64, fetch_micros: u64) -> WireFigures {
        WireFigures { fetched_bytes, fetch_micros, ..WireFigures::default() }
    }

    #[test]
    fn bandwidth_is_sampled_from_fetches_of_a_mebibyte_or_more_and_averaged() {
        // 2 MiB in 2 ms: ~1 GB/s. Less than 1 MiB, or a counter that went
        // back (a restarted worker), is no sample.
        let s = bandwidth_sample(&figures(0, 0), &figures(2 << 20, 2_000));
        assert_eq!(s.map(|b| b.round()), Some(((2u64 << 20) as f64 / 0.002).round()));
        assert_eq!(bandwidth_sample(&figures(0, 0), &figures(1000, 5)), None);
        assert_eq!(bandwidth_sample(&figures(5 << 20, 10), &figures(0, 20)), None);
        let mut n = Network::default();
        assert!(n.sample(0.0).is_none() && n.sample(f64::NAN).is_none());
        let Some(Event::Network { bandwidth, .. }) = n.sample(1e9) else { panic!("no event") };
        assert_eq!(bandwidth, 1_000_000_000);
        let Some(Event::Network { bandwidth, .. }) = n.sample(3e9) else { panic!("no event") };
        assert_eq!(bandwidth, 2_000_000_000, "the mean of 1 and 3 GB/s");
    }
}
