//! `/metrics`: the driver's figures in the Prometheus text format, taken
//! fresh at each scrape (one sample of the [`Source`]).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `shoal_tasks` | gauge | `state`: released, waiting, queued, processing, memory, erred |
//! | `shoal_tasks_submitted_total` | counter | |
//! | `shoal_tasks_finished_total` | counter | `name` |
//! | `shoal_tasks_failed_total` | counter | `name` |
//! | `shoal_task_seconds_total` | counter | `name` (time its runs took) |
//! | `shoal_result_bytes_total` | counter | |
//! | `shoal_transferred_bytes_total` | counter | (bytes that crossed a process boundary: results from worker processes; in the cluster, results and inputs between the scheduler and its workers and clients) |
//! | `shoal_scheduler_events_total` | counter | |
//! | `shoal_workers` | gauge | |
//! | `shoal_worker_threads` | gauge | |
//! | `shoal_store_bytes` | gauge | `where`: memory, spilled (processes mode; the cluster's scheduler: results it holds) |

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Source;

type Labels = Vec<(&'static str, String)>;

/// The text of one scrape.
pub fn render(source: &dyn Source) -> Result<String, std::fmt::Error> {
    let snap = source.snapshot(u64::MAX, 0);
    let workers = source.workers();
    let mut registry = Registry::default();

    let tasks = Family::<Labels, Gauge>::default();
    registry.register("shoal_tasks", "Live tasks by state", tasks.clone());
    let c = snap.counts.all;
    for (state, n) in [
        ("released", c.released),
        ("waiting", c.waiting),
        ("queued", c.queued),
        ("processing", c.processing),
        ("memory", c.memory),
        ("erred", c.erred),
    ] {
        tasks.get_or_create(&vec![("state", state.to_string())]).set(gauge(n));
    }

    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let m = Counter::<u64>::default();
        m.inc_by(value);
        registry.register(name, help, m);
    };
    let t = snap.totals;
    counter(&mut registry, "shoal_tasks_submitted", "Tasks submitted (new keys)", t.submitted);
    counter(&mut registry, "shoal_result_bytes", "Bytes of results produced", t.nbytes);
    counter(&mut registry, "shoal_transferred_bytes", "Bytes of results from worker processes", t.transferred);
    counter(&mut registry, "shoal_scheduler_events", "Events fed to the scheduler", t.events);

    let finished = Family::<Labels, Counter>::default();
    let failed = Family::<Labels, Counter>::default();
    let seconds = Family::<Labels, Counter<f64>>::default();
    registry.register("shoal_tasks_finished", "Runs that succeeded, per task name", finished.clone());
    registry.register("shoal_tasks_failed", "Runs that failed, per task name", failed.clone());
    registry.register("shoal_task_seconds", "Time runs took, per task name", seconds.clone());
    let mut per_name: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    for (func, f) in snap.per_func.iter().enumerate() {
        if f.done + f.failed + f.late == 0 {
            continue;
        }
        let e = per_name.entry(source.task_name(func as u32)).or_default();
        e.0 += f.done;
        e.1 += f.failed;
        e.2 += f.busy_ns as f64 / 1e9;
    }
    for (name, (done, fail, secs)) in per_name {
        let labels = vec![("name", name)];
        finished.get_or_create(&labels).inc_by(done);
        failed.get_or_create(&labels).inc_by(fail);
        seconds.get_or_create(&labels).inc_by(secs);
    }

    let n_workers = Gauge::<i64>::default();
    n_workers.set(gauge(workers.len() as u64));
    registry.register("shoal_workers", "Workers", n_workers);
    let threads = Gauge::<i64>::default();
    threads.set(gauge(workers.iter().map(|w| u64::from(w.nthreads)).sum()));
    registry.register("shoal_worker_threads", "Threads running tasks", threads);
    if let Some(store) = source.store() {
        let bytes = Family::<Labels, Gauge>::default();
        registry.register("shoal_store_bytes", "Bytes of results in the store", bytes.clone());
        bytes.get_or_create(&vec![("where", "memory".to_string())]).set(gauge(store.memory));
        bytes.get_or_create(&vec![("where", "spilled".to_string())]).set(gauge(store.spilled));
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
