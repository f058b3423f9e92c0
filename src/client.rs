//! The client: where a program submits work, in every mode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use shoal_dash::Dashboard;

use shoal_core::Key;
use shoal_core::object::{Data, read_owned};
use shoal_core::scheduler::TaskId;

use crate::Task;
use crate::args::{IntoArgs, Tokenizer};
use crate::engine::Engine;
use crate::engine::threads::ThreadsEngine;
use crate::error::{Error, Result};
use crate::future::{EngineHandle, EngineRef, Future};
use crate::lazy::{GraphBuilder, Lazy};
use crate::monitor::{EngineSource, PerformanceReport, start_dashboard};
use crate::progress::{Progress, ProgressBar};
use crate::status::ClientStatus;

/// Per-call options, like Dask's `submit(..., pure=, priority=, retries=)`.
#[derive(Clone, Debug)]
pub struct SubmitOptions {
    /// Identical calls (same task, equal arguments) share one key and one
    /// result. Default `true`, as in Dask; turn off for calls with side
    /// effects or randomness, or mark the task `#[shoal::task(impure)]`
    /// to make every call of it unique.
    pub pure: bool,
    /// Higher runs earlier among tasks that are ready at the same time.
    pub priority: i32,
    /// How many times a task that returns `Err` or panics is run again
    /// before its future fails.
    pub retries: u32,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions { pure: true, priority: 0, retries: 0 }
    }
}

impl SubmitOptions {
    /// Set [`pure`](SubmitOptions::pure): `false` makes this call unique.
    pub fn pure(mut self, pure: bool) -> Self {
        self.pure = pure;
        self
    }

    /// Set [`priority`](SubmitOptions::priority).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Set [`retries`](SubmitOptions::retries).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// When to show progress (default [`ProgressBar::Auto`]).
    pub progress: ProgressBar,
    /// Serve the live dashboard (and Prometheus `/metrics`) on this
    /// address, e.g. `127.0.0.1:8787` (port 0 picks a free one). Default
    /// `None`: served only if the environment variable `SHOAL_DASHBOARD`
    /// names an address. On an address that is not loopback the pages
    /// require a token, printed on stderr at start. In the cluster mode the
    /// scheduler serves the dashboard (`shoal scheduler --dashboard`); a
    /// client's own shows the same, read from the scheduler.
    pub dashboard: Option<SocketAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { progress: ProgressBar::Auto, dashboard: None }
    }
}

impl ClientOptions {
    /// Set [`progress`](ClientOptions::progress).
    pub fn progress(mut self, progress: ProgressBar) -> Self {
        self.progress = progress;
        self
    }

    /// Set [`dashboard`](ClientOptions::dashboard).
    pub fn dashboard(mut self, addr: SocketAddr) -> Self {
        self.dashboard = Some(addr);
        self
    }
}

/// A connection to an engine: submit work, get results.
///
/// Cloning is cheap and shares the engine. When the last clone is dropped
/// the workers stop; futures that outlive it fail with [`Error::Closed`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    engine: Arc<dyn Engine>,
    /// The same engine, as the futures of this client hold it.
    handle: EngineRef,
    options: ClientOptions,
    /// The same engine, as the dashboard and reports read it.
    source: Arc<EngineSource>,
    dashboard: Option<Dashboard>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // The server first: no page reads a stopped engine.
        drop(self.dashboard.take());
        self.engine.shutdown();
    }
}

/// Calls of one `map` submitted together (see [`Client::map_with`]).
const MAP_CHUNK: usize = 8192;

/// Threads in the threads mode when the number of cores is unknown.
const FALLBACK_THREADS: usize = 4;

impl Client {
    /// All cores of this machine, in this process: one worker thread per core.
    pub fn local() -> Result<Client> {
        Client::local_with(ClientOptions::default())
    }

    /// [`local`](Client::local) with options, e.g. without a progress bar:
    /// `Client::local_with(ClientOptions::default().progress(ProgressBar::Never))`.
    pub fn local_with(options: ClientOptions) -> Result<Client> {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(FALLBACK_THREADS);
        Client::threads_with(n, options)
    }

    /// `n` worker threads in this process; `0` is refused with
    /// [`Error::InvalidOption`].
    pub fn threads(n: usize) -> Result<Client> {
        Client::threads_with(n, ClientOptions::default())
    }

    /// `n` worker threads in this process, with options.
    pub fn threads_with(n: usize, options: ClientOptions) -> Result<Client> {
        if n == 0 {
            return Err(Error::InvalidOption(
                "Client::threads(0): a client needs at least one worker thread \
                 (Client::local() makes one per core)"
                    .into(),
            ));
        }
        shoal_core::registry::check()?;
        let engine = ThreadsEngine::start(n)?;
        Client::from_engine(engine, options)
    }

    /// A client over any engine (each mode's constructor ends here); its
    /// dashboard started if asked.
    pub(crate) fn from_engine(engine: Arc<dyn Engine>, options: ClientOptions) -> Result<Client> {
        // Keep the cluster worker hook linked into every binary that makes
        // a client: such a binary can be started as a cluster worker.
        #[cfg(target_os = "linux")]
        std::hint::black_box(&crate::engine::cluster::CLUSTER_HOOK);
        // And the worker-process hook: such a worker may be a machine's
        // agent, which starts worker processes of this binary.
        #[cfg(target_os = "linux")]
        std::hint::black_box(&crate::engine::processes::WORKER_HOOK);
        let handle = Arc::new(EngineHandle(Arc::clone(&engine)));
        let source = Arc::new(EngineSource(Arc::clone(&engine)));
        let dashboard = match start_dashboard(&options, &source) {
            Ok(d) => d,
            Err(e) => {
                engine.shutdown();
                return Err(e);
            }
        };
        Ok(Client { inner: Arc::new(ClientInner { engine, handle, options, source, dashboard }) })
    }

    /// The dashboard's URL (with its token if it needs one), if this client
    /// serves one (see [`ClientOptions::dashboard`]).
    pub fn dashboard_url(&self) -> Option<String> {
        self.inner.dashboard.as_ref().map(Dashboard::url)
    }

    /// Records a performance report (like Dask's `performance_report`):
    /// when the returned guard is dropped, `path` gets one self-contained
    /// HTML file (nothing fetched when it opens) with the task stream, time
    /// per task name, transfers and the totals of what ran meanwhile (in
    /// the cluster mode: on the scheduler, by every client).
    ///
    /// ```no_run
    /// # let client = shoal::Client::local()?;
    /// {
    ///     let _report = client.performance_report("report.html");
    ///     // … submit and gather …
    /// } // report.html written here
    /// # Ok::<(), shoal::Error>(())
    /// ```
    pub fn performance_report(&self, path: impl Into<PathBuf>) -> PerformanceReport {
        PerformanceReport::new(Arc::clone(&self.inner.source), path.into())
    }

    /// What the client's tasks are doing: live tasks by state, and per
    /// task name its live tasks by state, its runs done and failed, their
    /// time and result bytes.
    ///
    /// In the cluster mode this is the scheduler's view (one round trip):
    /// the tasks of every client of that scheduler, as its dashboard shows
    /// them; empty if the scheduler cannot be reached.
    pub fn status(&self) -> ClientStatus {
        ClientStatus::from_snapshot(&self.engine().snapshot(u64::MAX, 0))
    }

    /// How many tasks can run at once.
    pub fn nthreads(&self) -> usize {
        self.inner.engine.nthreads()
    }

    pub(crate) fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// Run `task(args)` and return a future for its result. Any argument may
    /// be a value or a future (or lazy value) of the parameter's type; a
    /// future makes the task wait for that result.
    pub fn submit<K: Task, A: IntoArgs<K::Params>>(&self, task: K, args: A) -> Result<Future<K::Output>> {
        self.submit_with(task, args, &SubmitOptions::default())
    }

    /// A future holding `value` (Dask's `client.scatter`): for a list of
    /// futures that mixes plain values with computed results
    /// (`total.submit(vec![client.scatter(1)?, f, g])`), or to put a large
    /// input in the workers' memory once for many tasks to read. It is one
    /// task of the built-in `shoal::value`, which returns its argument's
    /// object as is (no copy); equal values share it, as pure tasks do.
    ///
    /// ```
    /// # use shoal::prelude::*;
    /// #[shoal::task]
    /// fn total(xs: Vec<u64>) -> u64 {
    ///     xs.iter().sum()
    /// }
    /// # fn main() -> shoal::Result<()> {
    /// let client = Client::threads(2)?;
    /// let parts = vec![client.scatter(40u64)?, client.submit(total, vec![1u64, 1])?];
    /// assert_eq!(client.submit(total, &parts)?.result()?, 42);
    /// # Ok(())
    /// # }
    /// ```
    pub fn scatter<T: Data>(&self, value: T) -> Result<Future<T>> {
        self.submit(crate::lazy::Literal::new(), value)
    }

    /// [`scatter`](Client::scatter) for each value, in one submission.
    pub fn scatter_many<T: Data>(&self, values: impl IntoIterator<Item = T>) -> Result<Vec<Future<T>>> {
        self.map(crate::lazy::Literal::new(), values)
    }

    /// Run a task that takes no argument: `client.submit_no_args(answer)`
    /// is `client.submit(answer, ())`.
    pub fn submit_no_args<K: Task<Params = ()>>(&self, task: K) -> Result<Future<K::Output>> {
        self.submit(task, ())
    }

    /// [`submit`](Client::submit) with options.
    pub fn submit_with<K: Task, A: IntoArgs<K::Params>>(
        &self,
        task: K,
        args: A,
        options: &SubmitOptions,
    ) -> Result<Future<K::Output>> {
        let mut futures = self.calls(task, std::iter::once(args), options, false)?;
        futures.pop().ok_or(Error::Closed)
    }

    /// Run `task` once per item (one item is the argument of a
    /// one-parameter task, or a tuple of arguments), all in one submission.
    pub fn map<K: Task, A: IntoArgs<K::Params>>(
        &self,
        task: K,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Future<K::Output>>> {
        self.map_with(task, items, &SubmitOptions::default())
    }

    /// [`map`](Client::map) with options.
    pub fn map_with<K: Task, A: IntoArgs<K::Params>>(
        &self,
        task: K,
        items: impl IntoIterator<Item = A>,
        options: &SubmitOptions,
    ) -> Result<Vec<Future<K::Output>>> {
        self.calls(task, items, options, true)
    }

    /// Submit one call of `task` per item; with `indexed` (a `map`), each
    /// call carries its item's index, which its failures name.
    fn calls<K: Task, A: IntoArgs<K::Params>>(
        &self,
        task: K,
        items: impl IntoIterator<Item = A>,
        options: &SubmitOptions,
        indexed: bool,
    ) -> Result<Vec<Future<K::Output>>> {
        let entry = task.entry();
        let func = entry.index()?;
        let mut futures = Vec::new();
        let mut items = items.into_iter().peekable();
        // Submitted in chunks: workers start on the first chunk while the
        // next is built, and the transient graph stays small however long
        // the map is.
        while items.peek().is_some() {
            let mut graph = GraphBuilder::new();
            let mut wanted = Vec::new();
            for args in items.by_ref().take(MAP_CHUNK) {
                let mut tokens = Tokenizer::new(options.pure && task.pure(), entry);
                let args = args.into_args(&mut tokens);
                let key = Key { func, token: tokens.finish() };
                // An index past `u32::MAX` is not kept (see `Spec::item`).
                let item = if indexed { u32::try_from(futures.len() + wanted.len()).ok() } else { None };
                wanted.push(graph.add_call(key, args, options, true, item));
            }
            futures.extend(self.submit_graph(graph, &wanted)?);
        }
        Ok(futures)
    }

    /// Submit a built graph; one future per wanted node index. Each wanted
    /// node carries one client reference, so a node must not be listed
    /// twice (see [`compute_all`](Client::compute_all)).
    fn submit_graph<T>(&self, graph: GraphBuilder, wanted: &[usize]) -> Result<Vec<Future<T>>> {
        Ok(self.submit_graph_ids(graph, wanted)?.0)
    }

    /// [`submit_graph`](Client::submit_graph), and the ids of every node.
    fn submit_graph_ids<T>(&self, graph: GraphBuilder, wanted: &[usize]) -> Result<(Vec<Future<T>>, Vec<TaskId>)> {
        self.check_same_engine(&graph)?;
        let ids = self.engine().submit(graph.nodes)?;
        drop(graph.futures);
        let futures = wanted.iter().map(|&i| Future::new(Arc::clone(&self.inner.handle), ids[i])).collect();
        Ok((futures, ids))
    }

    fn check_same_engine(&self, graph: &GraphBuilder) -> Result<()> {
        if graph.futures.iter().any(|f| !Arc::ptr_eq(&f.engine, &self.inner.handle)) {
            return Err(Error::msg(
                "a Future from another Client was passed as an argument; \
                 futures can only be used with the client that made them (gather it and pass the value)",
            ));
        }
        Ok(())
    }

    /// Wait for all the futures and return their results in order; the
    /// first failure is returned as the error (Dask's `errors="raise"`).
    pub fn gather<T: Data>(&self, futures: &[Future<T>]) -> Result<Vec<T>> {
        if futures.iter().any(|f| !Arc::ptr_eq(&f.core.engine, &self.inner.handle)) {
            // Futures of other clients: one at a time, through their own engines.
            return futures.iter().map(Future::result).collect();
        }
        let ids: Vec<TaskId> = futures.iter().map(|f| f.core.id).collect();
        self.gather_ids(&ids, &ids)
    }

    /// Wait for `ids` (showing progress over `all`, which includes them)
    /// and read their results.
    fn gather_ids<T: Data>(&self, ids: &[TaskId], all: &[TaskId]) -> Result<Vec<T>> {
        self.wait_all(ids, all)?;
        let objs = self.engine().results(ids)?;
        objs.iter().map(|obj| Ok(read_owned::<T>(&**obj)?)).collect()
    }

    /// Block until every task of `ids` finished, stopping at the first
    /// failure, with progress shown if enabled: the count of finished tasks
    /// among `all` (every task the call waits on, directly or not), in any
    /// order.
    fn wait_all(&self, ids: &[TaskId], all: &[TaskId]) -> Result<()> {
        let mut progress = Progress::new(&self.inner.options.progress, all.len());
        let mut done = 0;
        let outcome = loop {
            match self.engine().wait_prefix(ids, done, progress.next_tick()) {
                Ok((index, Some(failure))) => break Err(Error::TaskAt { index, failure }),
                Ok((n, None)) if n == ids.len() => break Ok(()),
                Ok((n, None)) => {
                    done = n;
                    if progress.shown() {
                        progress.update(self.engine().count_finished(all));
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if progress.shown() {
            progress.update(self.engine().count_finished(all));
        }
        progress.finish();
        outcome
    }

    /// Submit the lazy graph that ends at `lazy`; a future for its value.
    pub fn compute<T: Data>(&self, lazy: &Lazy<T>) -> Result<Future<T>> {
        let mut v = self.compute_all(std::slice::from_ref(lazy))?;
        v.pop().ok_or(Error::Closed)
    }

    /// Submit several lazy values as one graph (shared parts computed once).
    pub fn compute_all<T: Data>(&self, lazies: &[Lazy<T>]) -> Result<Vec<Future<T>>> {
        Ok(self.compute_all_ids(lazies)?.0)
    }

    /// [`compute_all`](Client::compute_all), and the ids of every task of
    /// the graph.
    fn compute_all_ids<T: Data>(&self, lazies: &[Lazy<T>]) -> Result<(Vec<Future<T>>, Vec<TaskId>)> {
        // Lazy nodes are made without a check (see `Task::lazy`).
        shoal_core::registry::check()?;
        let mut graph = GraphBuilder::new();
        let nodes: Vec<usize> = lazies.iter().map(|l| graph.add_lazy(&l.node, true)).collect();
        // Equal lazy values are one node with one client reference: make
        // one future for it and clone it for the repeats.
        let mut distinct = nodes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let (futures, all) = self.submit_graph_ids::<T>(graph, &distinct)?;
        let futures = nodes.iter().map(|i| futures[distinct.partition_point(|d| d < i)].clone()).collect();
        Ok((futures, all))
    }

    /// Compute lazy values and return their values (like `dask.compute`),
    /// with a progress bar if enabled.
    ///
    /// The progress counts every task of the graph, not only the outputs.
    pub fn compute_values<T: Data>(&self, lazies: &[Lazy<T>]) -> Result<Vec<T>> {
        let (futures, all) = self.compute_all_ids(lazies)?;
        let ids: Vec<TaskId> = futures.iter().map(|f| f.core.id).collect();
        self.gather_ids(&ids, &all)
    }
}
