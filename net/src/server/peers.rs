//! One task per connection: the handshake, then the worker's or the
//! client's messages, then the cleanup (a worker's runs go back to the
//! scheduler, its results are lost; a client's references are released).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_core::Key;
use shoal_core::TaskFailure;
use shoal_core::driver::{GraphNode, NodeArg};
use shoal_core::failure::TaskError;
use shoal_core::registry::{InputError, RunError};
use shoal_core::scheduler::{Dep, Event, TaskId, TaskState, WorkerId};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedSender};

use super::Shared;
use super::backend::{ClientLink, Effects, Held, STORE, WorkerLink, carry_out, status_now};
use crate::auth::{self, Accept, PeerInfo};
use crate::conn::{Outgoing, write_loop};
use crate::error::{NetError, Result};
use crate::stream::{self, Reader};
use crate::wire::{
    self, ArchivedFromClientMsg, ArchivedFromWorkerMsg, ArchivedWireArg, ArchivedWireDep, ArchivedWireFailKind,
    ArchivedWireResult, FromClientMsg, FromWorkerMsg, MAX_ITEMS, MAX_NAME, MAX_NAMES, ObjectsIn, ObjectsOut, Role,
    ToClientMsg, ToWorkerMsg, WireFailKind, WireFigures, WireGathered,
};
use shoal_core::driver::events::{RING_CAPACITY, RunTimes, now_ns};
use shoal_core::driver::pacing::Pacing;

/// Serves one accepted connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let stream = match stream::accept(stream, shared.config.tls.as_ref(), shared.config.handshake_timeout).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!("refused a connection from {addr}: {e}");
            return;
        }
    };
    let (mut reader, mut writer) = stream.framed(addr.to_string(), shared.config.dead_after);
    let mut admitted = None;
    let settings = Accept {
        secret: shared.config.secret.as_ref(),
        timeout: shared.config.handshake_timeout,
        heartbeat: shared.config.heartbeat,
    };
    let accepted = auth::accept(&mut reader, &mut writer, settings, |info| {
        let id = admit(&shared, info)?;
        admitted = Some(id);
        Ok(id)
    })
    .await;
    let (info, id) = match (accepted, admitted) {
        (Ok(info), Some(id)) => (info, id),
        (result, admitted) => {
            if let Err(e) = result {
                tracing::warn!("refused a connection from {addr}: {e}");
            }
            if admitted.is_some() {
                unadmit(&shared);
            }
            return;
        }
    };
    let role = match info.role {
        Role::Client => "client",
        Role::Worker => "worker",
    };
    tracing::info!("{role} {id} connected from {addr} (pid {}, {} threads)", info.pid, info.nthreads);
    let (tx, rx) = mpsc::unbounded_channel();
    let heartbeat = match info.role {
        Role::Worker => wire::to_bytes(&ToWorkerMsg::Heartbeat),
        Role::Client => wire::to_bytes(&ToClientMsg::Heartbeat),
    };
    let heartbeat = match heartbeat {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            unadmit(&shared);
            return;
        }
    };
    let writer = tokio::spawn(write_loop(writer, rx, heartbeat, shared.config.heartbeat));
    let outcome = match info.role {
        Role::Worker => serve_worker(&shared, WorkerId(id), &info, addr, &mut reader, &tx).await,
        Role::Client => serve_client(&shared, id, &mut reader, &tx).await,
    };
    match &outcome {
        Ok(()) => tracing::info!("{role} {id} ({addr}) disconnected"),
        Err(e) => {
            tracing::warn!("{role} {id} ({addr}) dropped: {e}");
            let _ = tx.send(Outgoing::Close(e.to_string()));
        }
    }
    match info.role {
        Role::Worker => worker_lost(&shared, WorkerId(id)),
        Role::Client => client_gone(&shared, id),
    }
    unadmit(&shared);
    drop(tx);
    // The writer ends once every queue sender is gone (the link's went
    // with the cleanup); it is not waited for past a moment.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
}

/// The fingerprint check: the first peer to connect while none is connected
/// sets the cluster's; every other must have the same.
fn admit(shared: &Shared, info: &PeerInfo) -> std::result::Result<u32, String> {
    let mut st = shared.driver.lock();
    let role = match info.role {
        Role::Client => "client",
        Role::Worker => "worker",
    };
    match &st.backend.fingerprint {
        Some((fingerprint, who)) if *fingerprint != info.fingerprint => {
            return Err(format!(
                "registry fingerprint mismatch: this {role} (pid {}) has the task registry {:032x}, but the cluster \
                 runs {fingerprint:032x} (set by {who}); start the workers and clients from the same build of the \
                 same program",
                info.pid, info.fingerprint
            ));
        }
        Some(_) => {}
        None => {
            st.backend.fingerprint = Some((info.fingerprint, format!("the first {role} to connect, pid {}", info.pid)))
        }
    }
    st.backend.peers += 1;
    Ok(shared.next_id.fetch_add(1, Ordering::Relaxed))
}

fn unadmit(shared: &Shared) {
    let mut st = shared.driver.lock();
    st.backend.peers = st.backend.peers.saturating_sub(1);
    if st.backend.peers == 0 {
        st.backend.fingerprint = None;
        // The next peers may run another program: its names, not these.
        st.backend.names.clear();
    }
}

/// Tells every client how many workers (and threads) there are now.
fn announce_workers(shared: &Shared) {
    let (count, nthreads, clients) = {
        let st = shared.driver.lock();
        let nthreads: u32 = st.backend.workers.values().map(|w| w.nthreads).sum();
        let clients: Vec<UnboundedSender<Outgoing>> = st.backend.clients.values().map(|c| c.tx.clone()).collect();
        (st.backend.workers.len() as u32, nthreads, clients)
    };
    if let Ok(body) = wire::to_bytes(&ToClientMsg::Workers { count, nthreads }) {
        for tx in clients {
            let _ = tx.send(Outgoing::message(body.clone()));
        }
    }
}

/// One ended run, decoded outside the lock.
enum Ended {
    Done { task: TaskId, obj: Option<shoal_core::object::Obj>, nbytes: u64 },
    Failed { task: TaskId, kind: WireFailKind, message: String, type_name: String, chain: Vec<String> },
}

async fn serve_worker(
    shared: &Shared,
    worker: WorkerId,
    info: &PeerInfo,
    addr: SocketAddr,
    reader: &mut Reader,
    tx: &UnboundedSender<Outgoing>,
) -> Result<()> {
    let nthreads = info.nthreads.max(1);
    // Peers fetch from the address the worker connected from.
    let data = (info.data_port != 0).then(|| Arc::from(SocketAddr::new(addr.ip(), info.data_port).to_string()));
    let mut fx = Effects::default();
    {
        let mut st = shared.driver.lock();
        let link = WorkerLink { tx: tx.clone(), nthreads, data, pid: info.pid, figures: Default::default() };
        st.backend.workers.insert(worker, link);
        st.handle(Event::WorkerJoined { worker, nthreads }, &mut fx);
    }
    carry_out(&shared.driver, fx);
    announce_workers(shared);
    loop {
        let message = match reader.message_or_end().await? {
            Some(m) => m,
            None => return Ok(()),
        };
        let msg = wire::access::<FromWorkerMsg>(&message.body)?;
        let mut objects = message.objects;
        let results = match msg {
            ArchivedFromWorkerMsg::Heartbeat => continue,
            ArchivedFromWorkerMsg::Figures(f) => {
                let figures = WireFigures {
                    host: bounded_name(f.host.as_str()),
                    rss: f.rss.to_native(),
                    cpu_seconds: f.cpu_seconds.to_native(),
                    cpu_percent: f.cpu_percent.to_native(),
                    served_bytes: f.served_bytes.to_native(),
                    fetched_bytes: f.fetched_bytes.to_native(),
                    fetch_micros: f.fetch_micros.to_native(),
                };
                let mut fx = Effects::default();
                {
                    let mut st = shared.driver.lock();
                    let measured = st.backend.workers.get_mut(&worker).and_then(|link| {
                        let before = std::mem::replace(&mut link.figures, figures);
                        let now = &link.figures;
                        super::backend::bandwidth_sample(&before, now)
                    });
                    if let Some(event) = measured.and_then(|sample| st.backend.network.sample(sample)) {
                        st.handle(event, &mut fx);
                    }
                }
                carry_out(&shared.driver, fx);
                continue;
            }
            ArchivedFromWorkerMsg::Stolen(_) => return Err(NetError::protocol("gave back runs nobody asked for")),
            ArchivedFromWorkerMsg::Recalled(tasks) => {
                // Runs asked back for an idle worker (`Action::TakeBack`),
                // never started here and never to be: the scheduler sends
                // each to the worker it asked for (or queues it). A run it
                // no longer waits for here is a stale answer, ignored.
                let mut fx = Effects::default();
                {
                    let mut st = shared.driver.lock();
                    for task in tasks.iter().map(TaskId::from) {
                        if st.sched.processing_on(task) == Some(worker) {
                            st.backend.counts.given_back += 1;
                            st.handle(Event::TaskStolen { task, from: worker, to: None }, &mut fx);
                        }
                    }
                }
                carry_out(&shared.driver, fx);
                continue;
            }
            ArchivedFromWorkerMsg::Running(tasks) => {
                // Runs that started there: a loss of this worker now counts
                // against them (stale ones are ignored).
                let mut fx = Effects::default();
                {
                    let mut st = shared.driver.lock();
                    for task in tasks.iter().map(TaskId::from) {
                        if st.sched.processing_on(task) == Some(worker) {
                            st.handle(Event::TaskStarted { task, worker }, &mut fx);
                        }
                    }
                }
                carry_out(&shared.driver, fx);
                continue;
            }
            ArchivedFromWorkerMsg::Unfetched(tasks) => {
                // Runs whose inputs could not be fetched (never started):
                // queued again; if their holder is lost, the scheduler
                // learns it and recomputes what it held first.
                let mut fx = Effects::default();
                {
                    let mut st = shared.driver.lock();
                    for task in tasks.iter().map(TaskId::from) {
                        if st.sched.processing_on(task) == Some(worker) {
                            st.handle(Event::TaskStolen { task, from: worker, to: None }, &mut fx);
                        }
                    }
                }
                carry_out(&shared.driver, fx);
                continue;
            }
            ArchivedFromWorkerMsg::Results(results) => decode_results(results.as_slice(), &mut objects)?,
        };
        objects.finish()?;
        // The runs ended about now: a worker measures how long each took,
        // and its start is placed that long before (two machines' clocks
        // are never compared).
        let seen = now_ns();
        let mut fx = Effects::default();
        {
            let mut st = shared.driver.lock();
            let pacing = st.backend.pacing.get_or_insert_with(|| Pacing::new(super::EXTRA_SLOTS_PER_THREAD));
            for (_, micros) in &results {
                pacing.note(*micros);
            }
            if let Some(extra_slots_per_thread) = pacing.update() {
                st.handle(Event::Saturation { extra_slots_per_thread }, &mut fx);
            }
            for (ended, micros) in results {
                if let Ended::Done { nbytes, task, .. } = &ended {
                    st.events.transferred(*nbytes);
                    // For weighing transfers: its function's mean run time.
                    if st.sched.processing_on(*task) == Some(worker) {
                        st.handle(Event::RunTime { task: *task, micros: u64::from(micros) }, &mut fx);
                    }
                }
                if let Some(event) = result_event(&mut st, worker, ended) {
                    st.handle_run(event, RunTimes::ended_at(seen, micros), &mut fx);
                }
            }
        }
        carry_out(&shared.driver, fx);
    }
}

fn decode_results(results: &[ArchivedWireResult], objects: &mut ObjectsIn) -> Result<Vec<(Ended, u32)>> {
    let text = |s: &rkyv::string::ArchivedString| s.as_str().to_string();
    results
        .iter()
        .map(|r| {
            Ok(match r {
                ArchivedWireResult::Done { task, result, nbytes, micros } => (
                    Ended::Done {
                        task: task.into(),
                        obj: result.as_ref().map(|r| objects.take(r)).transpose()?,
                        nbytes: nbytes.to_native(),
                    },
                    micros.to_native(),
                ),
                ArchivedWireResult::Failed { task, kind, message, type_name, chain, micros } => (
                    Ended::Failed {
                        task: task.into(),
                        kind: match kind {
                            ArchivedWireFailKind::Error => WireFailKind::Error,
                            ArchivedWireFailKind::Panic => WireFailKind::Panic,
                            ArchivedWireFailKind::Input => WireFailKind::Input,
                        },
                        message: text(message),
                        type_name: text(type_name),
                        chain: chain.iter().map(text).collect(),
                    },
                    micros.to_native(),
                ),
            })
        })
        .collect()
}

/// The scheduler event for one ended run, keeping the result if the
/// scheduler takes it (the task is processing on this worker); a late or
/// duplicate run's result is dropped.
fn result_event(st: &mut super::backend::State, worker: WorkerId, ended: Ended) -> Option<Event> {
    Some(match ended {
        Ended::Done { task, obj, nbytes } => {
            let accepted = st.sched.state(task) == Some(TaskState::Processing)
                && st.sched.processing_on(task) == Some(worker)
                && st.spec(task).is_some();
            if let Some(obj) = &obj {
                st.backend.counts.result_bytes_received += obj.nbytes();
            }
            if accepted && let Some(spec) = st.spec_mut(task) {
                let added = obj.as_ref().map_or(0, |o| o.nbytes());
                let held = Held { task, holder: worker, small: obj, nbytes, copies: Vec::new() };
                let replaced = spec.task.result.replace(held).map_or(0, |old| old.small.map_or(0, |o| o.nbytes()));
                st.backend.held = (st.backend.held + added).saturating_sub(replaced);
            }
            Event::TaskFinished { task, worker, nbytes }
        }
        Ended::Failed { task, kind, message, type_name, chain } => {
            let key = st.sched.key(task)?;
            // The scheduler has no user code: it cannot show the arguments'
            // values, so failures carry none.
            let failure = match kind {
                WireFailKind::Error => TaskFailure::from_run(
                    key,
                    RunError::Returned(TaskError::from_parts(type_name, message, chain)),
                    || None,
                ),
                WireFailKind::Panic => TaskFailure::Panic { key, item: None, message, arguments: None },
                WireFailKind::Input => TaskFailure::from_run(key, RunError::Input(InputError(message)), || None),
            };
            Event::TaskFailed { task, worker, failure }
        }
    })
}

/// A worker's connection ended: what it ran goes back to the scheduler,
/// and what it held is gone with it (recomputed if still needed) — unless
/// it held only small results, which the scheduler keeps (they pass to
/// [`STORE`]). Copies other workers fetched of its results are dropped.
fn worker_lost(shared: &Shared, worker: WorkerId) {
    let mut fx = Effects::default();
    {
        let mut st = shared.driver.lock();
        if st.backend.workers.remove(&worker).is_none() {
            return;
        }
        let mut large = false;
        for spec in st.specs_mut() {
            if let Some(held) = spec.task.result.as_mut() {
                held.copies.retain(|&w| w != worker);
                large |= held.holder == worker && held.small.is_none();
            }
        }
        for spec in st.specs_mut() {
            match spec.task.result.as_mut() {
                Some(held) if held.holder == worker && !large => held.holder = STORE,
                Some(held) if held.holder == worker => {
                    if let Some(held) = spec.task.result.take() {
                        fx.drop_held(held);
                    }
                }
                _ => {}
            }
        }
        let event = if large { Event::WorkerLost { worker } } else { Event::ProcessLost { worker, heir: STORE } };
        st.handle(event, &mut fx);
    }
    carry_out(&shared.driver, fx);
    announce_workers(shared);
}

async fn serve_client(shared: &Shared, client: u32, reader: &mut Reader, tx: &UnboundedSender<Outgoing>) -> Result<()> {
    shared.driver.lock().backend.clients.insert(client, ClientLink { tx: tx.clone(), refs: HashMap::default() });
    announce_workers(shared);
    loop {
        let message = match reader.message_or_end().await? {
            Some(m) => m,
            None => return Ok(()),
        };
        let msg = wire::access::<FromClientMsg>(&message.body)?;
        let mut objects = message.objects;
        match msg {
            ArchivedFromClientMsg::Heartbeat => {}
            ArchivedFromClientMsg::Names(names) => {
                if names.len() > MAX_NAMES {
                    return Err(NetError::protocol(format!("{} task names, over {MAX_NAMES}", names.len())));
                }
                let mut st = shared.driver.lock();
                // Every peer has the same registry (the fingerprint): the
                // first client's names hold for all.
                if st.backend.names.is_empty() {
                    st.backend.names = names.iter().map(|n| bounded_name(n.as_str())).collect();
                }
            }
            ArchivedFromClientMsg::Monitor { request, since, max } => {
                let max = (max.to_native() as usize).min(RING_CAPACITY);
                let snapshot = Box::new(crate::monitor::snapshot_out(shared, since.to_native(), max));
                let body = wire::to_bytes(&ToClientMsg::Monitor { request: request.to_native(), snapshot })?;
                let _ = tx.send(Outgoing::message(body));
            }
            ArchivedFromClientMsg::States { request, tasks } => {
                if tasks.len() > MAX_ITEMS {
                    return Err(NetError::protocol(format!("the states of {} tasks, over {MAX_ITEMS}", tasks.len())));
                }
                let states: Vec<u8> = {
                    let st = shared.driver.lock();
                    tasks.iter().map(|t| wire::state_code(st.sched.state(TaskId::from(t)))).collect()
                };
                let body = wire::to_bytes(&ToClientMsg::States { request: request.to_native(), states })?;
                let _ = tx.send(Outgoing::message(body));
            }
            ArchivedFromClientMsg::Submit { request, nodes } => {
                let nodes = decode_nodes(nodes.as_slice(), &mut objects)?;
                objects.finish()?;
                submit(shared, client, request.to_native(), nodes, tx)?;
            }
            ArchivedFromClientMsg::Release(tasks) => {
                references(shared, client, tasks.iter().map(TaskId::from), Change::Release)
            }
            ArchivedFromClientMsg::Retain(tasks) => {
                references(shared, client, tasks.iter().map(TaskId::from), Change::Retain)
            }
            ArchivedFromClientMsg::Cancel(tasks) => {
                references(shared, client, tasks.iter().map(TaskId::from), Change::Cancel)
            }
            ArchivedFromClientMsg::Gather { request, tasks } => {
                if tasks.len() > MAX_ITEMS {
                    return Err(NetError::protocol(format!("a gather of {} results, over {MAX_ITEMS}", tasks.len())));
                }
                gather(shared, request.to_native(), tasks.iter().map(TaskId::from).collect(), tx)?;
            }
        }
    }
}

fn decode_nodes(nodes: &[wire::ArchivedWireNode], objects: &mut ObjectsIn) -> Result<Vec<GraphNode>> {
    let dep = |d: &ArchivedWireDep| match d {
        ArchivedWireDep::Node(i) => Dep::Node(i.to_native() as usize),
        ArchivedWireDep::Task(t) => Dep::Task(t.into()),
    };
    nodes
        .iter()
        .map(|n| {
            let args = n
                .args
                .iter()
                .map(|a| {
                    Ok(match a {
                        ArchivedWireArg::Value(obj) => NodeArg::Value(objects.take(obj)?),
                        ArchivedWireArg::Dep(d) => NodeArg::Dep(dep(d)),
                        ArchivedWireArg::List(ds) => NodeArg::List(ds.iter().map(dep).collect()),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(GraphNode {
                key: Key::from(&n.key),
                args,
                wanted: n.wanted,
                priority: n.priority.to_native(),
                retries: n.retries.to_native(),
                item: n.item.as_ref().map(|i| i.to_native()),
            })
        })
        .collect()
}

fn submit(
    shared: &Shared,
    client: u32,
    request: u64,
    nodes: Vec<GraphNode>,
    tx: &UnboundedSender<Outgoing>,
) -> Result<()> {
    let wanted: Vec<bool> = nodes.iter().map(|n| n.wanted).collect();
    let sent: u64 = nodes
        .iter()
        .flat_map(|n| &n.args)
        .map(|a| match a {
            NodeArg::Value(obj) => obj.nbytes(),
            _ => 0,
        })
        .sum();
    let (ids, fx) = match shared.driver.submit(nodes) {
        Ok(answer) => answer,
        Err(e) => {
            let body = wire::to_bytes(&ToClientMsg::Rejected { request, message: e.to_string() })?;
            let _ = tx.send(Outgoing::message(body));
            return Ok(());
        }
    };
    carry_out(&shared.driver, fx);
    // The client's references, its answer, then the news of what is
    // finished already (a task that finished before the references were
    // counted was reported to no one). All under the lock: a report made
    // after the references are counted is queued after it is released, so
    // the client always reads `Submitted` before any news of these ids.
    let answer = wire::to_bytes(&ToClientMsg::Submitted { request, ids: ids.iter().map(|&id| id.into()).collect() })?;
    let mut st = shared.driver.lock();
    st.events.transferred(sent);
    let mut news = Vec::new();
    for (&id, _) in ids.iter().zip(&wanted).filter(|(_, w)| **w) {
        if let Some(link) = st.backend.clients.get_mut(&client) {
            *link.refs.entry(id).or_insert(0) += 1;
        }
        if let Some(status) = status_now(&st, id) {
            news.push((id.into(), status));
        }
    }
    let _ = tx.send(Outgoing::message(answer));
    if !news.is_empty() {
        let _ = tx.send(Outgoing::message(wire::to_bytes(&ToClientMsg::Status(news))?));
    }
    drop(st);
    Ok(())
}

#[derive(Clone, Copy)]
enum Change {
    Release,
    Retain,
    Cancel,
}

/// Applies a client's releases, retains or cancels — only of tasks it holds
/// a reference to, so that no client can touch another's futures.
fn references(shared: &Shared, client: u32, tasks: impl Iterator<Item = TaskId>, change: Change) {
    let mut fx = Effects::default();
    {
        let mut st = shared.driver.lock();
        for task in tasks {
            let Some(link) = st.backend.clients.get_mut(&client) else { return };
            let Some(count) = link.refs.get_mut(&task) else {
                tracing::debug!("client {client} named task {task:?}, which it holds no future on; ignored");
                continue;
            };
            let event = match change {
                Change::Release => {
                    *count -= 1;
                    if *count == 0 {
                        link.refs.remove(&task);
                    }
                    Event::ClientReleased { task }
                }
                Change::Retain => {
                    *count += 1;
                    Event::ClientRetained { task }
                }
                Change::Cancel => Event::Cancel { task },
            };
            st.handle(event, &mut fx);
        }
    }
    carry_out(&shared.driver, fx);
}

/// Answers a gather: small results themselves, the data address of the
/// worker holding each larger one (the client fetches it from there), or
/// why there is none.
fn gather(shared: &Shared, request: u64, tasks: Vec<TaskId>, tx: &UnboundedSender<Outgoing>) -> Result<()> {
    enum Item {
        Obj(shoal_core::object::Obj),
        Gathered(WireGathered),
    }
    let items: Vec<Item> = {
        let mut st = shared.driver.lock();
        let items: Vec<Item> = tasks
            .iter()
            .map(|&task| match st.finished(task) {
                Ok(spec) => match &spec.task.result {
                    Some(Held { small: Some(obj), .. }) => Item::Obj(Arc::clone(obj)),
                    Some(held) => match st.backend.workers.get(&held.holder).and_then(|l| l.data.as_deref()) {
                        Some(address) => Item::Gathered(WireGathered::At(address.to_string())),
                        None => Item::Gathered(WireGathered::Again("its holder is gone".into())),
                    },
                    None => Item::Gathered(WireGathered::Missing("the scheduler knows of no result for it".into())),
                },
                Err(shoal_core::driver::DriverError::Task(failure)) => {
                    Item::Gathered(WireGathered::Failed(wire::failure_out(&failure)))
                }
                // Known but not in memory: its holder was lost, and it is
                // being computed again.
                Err(_) if st.spec(task).is_some() => {
                    Item::Gathered(WireGathered::Again("it is being computed again".into()))
                }
                Err(e) => Item::Gathered(WireGathered::Missing(e.to_string())),
            })
            .collect();
        let moved = items.iter().map(|i| if let Item::Obj(o) = i { o.nbytes() } else { 0 }).sum();
        st.events.transferred(moved);
        items
    };
    let mut out = ObjectsOut::default();
    let items = items
        .into_iter()
        .map(|item| match item {
            Item::Obj(obj) => match out.object(&obj) {
                Ok(wire_obj) => WireGathered::Object(wire_obj),
                Err(message) => WireGathered::Missing(message),
            },
            Item::Gathered(gathered) => gathered,
        })
        .collect();
    let body = wire::to_bytes(&ToClientMsg::Objects { request, items })?;
    let _ = tx.send(Outgoing::Message { body, blobs: out.blobs });
    Ok(())
}

/// A client's connection ended: every reference it held is released.
fn client_gone(shared: &Shared, client: u32) {
    let mut fx = Effects::default();
    {
        let mut st = shared.driver.lock();
        let Some(link) = st.backend.clients.remove(&client) else { return };
        for (task, count) in link.refs {
            for _ in 0..count {
                st.handle(Event::ClientReleased { task }, &mut fx);
            }
        }
    }
    carry_out(&shared.driver, fx);
}

/// A name from a peer, cut to [`MAX_NAME`] characters.
fn bounded_name(name: &str) -> String {
    name.chars().take(MAX_NAME).collect()
}
