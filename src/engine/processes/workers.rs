//! The engine's side of its workers: their connections, the messages they
//! send (turned into scheduler events), and the runs sent to them.
//!
//! Runs are encoded and sent after the engine lock is released; a run whose
//! inputs cannot be sent fails its task, and a connection that cannot be
//! written is closed, so that its reader reports the worker lost.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use shoal_core::TaskFailure;
use shoal_core::scheduler::{Event, TaskId, TaskState, WorkerId};
use shoal_shm::fdpass;

use super::objects::{self, Outgoing};
use super::protocol::{self, ClientMsg, FailKind, ToWorker};
use super::state::{Effects, Held, Job, JobInput};
use super::{ProcessesEngine, lock};

/// The client's end of a worker's socket.
pub(crate) struct Conn {
    pub id: WorkerId,
    pub pid: u32,
    pub socket: UnixStream,
    /// One message at a time: a message may take several `sendmsg` calls.
    send_lock: Mutex<()>,
}

impl Conn {
    pub(crate) fn new(id: WorkerId, pid: u32, socket: UnixStream) -> Conn {
        Conn { id, pid, socket, send_lock: Mutex::new(()) }
    }

    pub(super) fn send(&self, outgoing: &Outgoing) -> std::result::Result<(), String> {
        let fds = outgoing.fds().map_err(|e| e.to_string())?;
        let _guard = lock(&self.send_lock);
        fdpass::send(&self.socket, &outgoing.payload, &fds).map_err(|e| e.to_string())
    }

    /// Ends the connection both ways: the worker reads the end of the
    /// stream, and so does this side's reader thread.
    pub(crate) fn close(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl ProcessesEngine {
    /// A worker said hello: it can take tasks. `false` if the engine is
    /// shut down (the caller then stops the worker).
    pub(crate) fn add_worker(&self, conn: Arc<Conn>, nthreads: usize) -> bool {
        let mut effects = Effects::default();
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            let worker = conn.id;
            st.workers.insert(worker, conn);
            st.broken = None;
            st.handle(Event::WorkerJoined { worker, nthreads: nthreads as u32 }, &mut effects);
        }
        self.finish(effects);
        true
    }

    /// A worker's connection ended (it died, closed it, or broke the
    /// protocol): what it ran goes back to the scheduler, what it held is
    /// lost. `false` if the engine is shut down.
    pub(crate) fn lose_worker(&self, worker: WorkerId) -> bool {
        let mut effects = Effects::default();
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            st.workers.remove(&worker);
            let mut actions = std::mem::take(&mut st.actions);
            st.sched.handle(Event::WorkerLost { worker }, &mut actions);
            for spec in st.specs.iter_mut().flatten() {
                if spec.result.as_ref().is_some_and(|h| h.worker == worker)
                    && let Some(held) = spec.result.take()
                {
                    effects.garbage.push(held.obj);
                }
            }
            st.apply(&mut actions, &mut effects);
            st.actions = actions;
        }
        self.finish(effects);
        true
    }

    /// No worker is left and none can be started: fail every wait.
    pub(crate) fn break_down(&self, reason: String) {
        let mut st = self.lock();
        if st.workers.is_empty() && !st.closed {
            st.broken = Some(reason);
            drop(st);
            self.changed.notify_all();
        }
    }

    /// A message from worker `worker` (after its hello). `Err` with a reason
    /// if it breaks the protocol: the caller then drops the connection.
    pub(crate) fn on_message(&self, worker: WorkerId, message: ClientMsg) -> std::result::Result<(), String> {
        let mut effects = Effects::default();
        {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            let event = match message {
                ClientMsg::Hello { .. } => return Err("sent a second hello".into()),
                ClientMsg::Done { task, result, nbytes } => {
                    // Keep the result only if the scheduler takes this run's
                    // result (it is processing on this worker); a late or
                    // duplicate run's copy is dropped.
                    let accepted = st.sched.state(task) == Some(TaskState::Processing)
                        && st.sched.processing_on(task) == Some(worker);
                    match st.spec_mut(task) {
                        Some(spec) if accepted => {
                            if let Some(old) = spec.result.replace(Held { obj: result, worker }) {
                                effects.garbage.push(old.obj);
                            }
                        }
                        _ => effects.garbage.push(result),
                    }
                    Event::TaskFinished { task, worker, nbytes }
                }
                ClientMsg::Failed { task, kind, message } => {
                    let Some(key) = st.sched.key(task) else { return Ok(()) };
                    let failure = match kind {
                        FailKind::Error => TaskFailure::Error { key, message },
                        FailKind::Panic => TaskFailure::Panic { key, message },
                        FailKind::Input => TaskFailure::Error { key, message: format!("bad input: {message}") },
                    };
                    Event::TaskFailed { task, worker, failure }
                }
            };
            st.handle(event, &mut effects);
        }
        self.finish(effects);
        Ok(())
    }

    /// Everything done after unlocking: send runs, wake clients, drop.
    pub(super) fn finish(&self, mut effects: Effects) {
        loop {
            let jobs = std::mem::take(&mut effects.jobs);
            // Free released results before waking clients, so a client that
            // sees its tasks done also sees their inputs freed.
            drop(std::mem::take(&mut effects.garbage));
            drop(std::mem::take(&mut effects.forgotten));
            if effects.wake_clients {
                self.changed.notify_all();
            }
            let failures: Vec<Event> = jobs.into_iter().filter_map(|job| self.send_job(job)).collect();
            if failures.is_empty() {
                return;
            }
            effects = Effects::default();
            let mut st = self.lock();
            for event in failures {
                st.handle(event, &mut effects);
            }
        }
    }

    /// Sends a run to its worker; the failure event if its inputs could not
    /// be sent. A broken connection is closed: its reader reports the loss.
    fn send_job(&self, job: Job) -> Option<Event> {
        let Job { id, key, func, worker, conn, inputs } = job;
        let outgoing = match inputs.and_then(|inputs| self.encode_run(id, func, inputs)) {
            Ok(outgoing) => outgoing,
            Err(message) => {
                let failure = TaskFailure::Error { key, message: format!("could not send its inputs: {message}") };
                return Some(Event::TaskFailed { task: id, worker, failure });
            }
        };
        if let Err(e) = conn.send(&outgoing) {
            if !self.lock().closed {
                eprintln!("shoal: cannot send a task to worker {} (pid {}): {e}; dropping it", worker.0, conn.pid);
            }
            conn.close();
        }
        None
    }

    fn encode_run(&self, id: TaskId, func: u32, inputs: Vec<JobInput>) -> std::result::Result<Outgoing, String> {
        let mut segments = Vec::new();
        let mut wire = Vec::with_capacity(inputs.len());
        for input in inputs {
            let obj = match input {
                JobInput::One(obj) => obj,
                // A `Vec<T>` made of several results is assembled here, in
                // the client: the function that does it cannot cross processes.
                JobInput::List(items, assemble) => assemble(&items).map_err(|e| e.to_string())?,
            };
            wire.push(objects::wire(&obj, || self.segment_name("list"), &mut segments)?);
        }
        let run = ToWorker::Run { task: id.into(), func, inputs: wire };
        let payload = protocol::encode(&run).map_err(|e| e.to_string())?;
        Ok(Outgoing { payload, segments })
    }

    pub(super) fn segment_name(&self, what: &str) -> String {
        format!("{}-{what}{}", self.segment_prefix, self.next_segment.fetch_add(1, Ordering::Relaxed))
    }
}
