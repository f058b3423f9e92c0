#!/usr/bin/env python3
"""Data-heavy Dask graphs for shoal's `graphs` benchmark: export, and replay on Dask.

    python bench/dask/graphs.py export OUT_DIR [--scale S]
    python bench/dask/graphs.py replay GRAPH.json [--mode processes|threads] [--timeout S]

`export` builds real Dask graphs (dask.array on numpy, dask.delayed), optimizes
them as `compute` would, runs each once on Dask's synchronous scheduler and
records, per task, its dependencies, how long it ran and how many bytes it
returned (`dask.sizeof`).  One JSON file per graph:

    {"name": ..., "description": ..., "dask_version": ...,
     "tasks": [{"deps": [i, ...], "seconds": d, "bytes": n}, ...],   # topological order
     "sinks": [i, ...]}

`export` needs numpy; the files it wrote are committed under bench/dask/graphs/,
so the benchmark itself does not.

`replay` runs such a file on a fresh `LocalCluster` (the same shapes as
bench.py: processes = 2 workers x 1 thread, threads = 1 worker x 2 threads),
each task a synthetic one: it reads one byte per 4 KiB page of each input,
sleeps for the recorded duration and returns the recorded number of bytes
(written, so the pages are really there).  shoal replays the same files with
the same task (bench/src/graphs.rs).  One untimed warm-up graph of 4 tiny
tasks first; the last line of stdout is one JSON object:
{"seconds": makespan, "tasks": n} or {"error": "..."}.
"""
import argparse
import json
import os
import sys
import threading
import time


# --- the synthetic task -------------------------------------------------------

PAGE = 4096


def synth(i, seconds, nbytes, inputs):
    touched = 0
    for data in inputs:
        touched += sum(data[::PAGE])
    time.sleep(seconds)
    return bytes([(i + touched) % 251 + 1]) * nbytes


# --- export -------------------------------------------------------------------

def graphs(scale):
    """name -> (description, collection).  `scale` multiplies array sides."""
    import numpy as np
    import dask
    import dask.array as da

    def side(n):
        return max(1, int(n * scale))

    out = {}
    n = side(8000)
    x = da.random.random((n, n), chunks=(n // 20, n))
    out["rechunk"] = ("%d x %d float64 rechunked from 20 row blocks to 20 column blocks, then a column sum"
                      % (n, n), x.rechunk((n, n // 20)).sum(axis=0))
    n = side(4000)
    x = da.random.random((n, n), chunks=n // 4)
    out["matmul"] = ("(x @ x.T).sum(): %d x %d float64 in 4 x 4 blocks of %d MB"
                     % (n, n, (n // 4) ** 2 * 8 // 10**6), (x @ x.T).sum())
    n = side(2000)
    x = da.random.random((64, n, n // 2), chunks=(1, n, n // 2))
    out["tree"] = ("64 blocks of %d MB summed elementwise in a tree of fan-in 4"
                   % (n * (n // 2) * 8 // 10**6), x.sum(axis=0, split_every=4))
    n = side(6000)
    x = da.random.random((n, n), chunks=n // 8)
    out["add_transpose"] = ("(x + x.T).mean(axis=0) over 8 x 8 blocks of %d MB" % ((n // 8) ** 2 * 8 // 10**6),
                            (x + x.T).mean(axis=0))
    n = side(400_000)
    x = da.random.random((n, 64), chunks=(n // 16, 64))
    rng = np.random.default_rng(0)
    out["shuffle"] = ("task shuffle of %d x 64 float64 rows in 16 chunks, then a column sum" % n,
                      x.shuffle([list(p) for p in np.array_split(rng.permutation(n), 16)], axis=0).sum(axis=0))

    @dask.delayed(pure=True)
    def load(i, n):
        return np.random.default_rng(i).random(n)

    @dask.delayed(pure=True)
    def process(a):
        return np.sort(a)

    @dask.delayed(pure=True)
    def summarize(parts):
        return np.array([p.mean() for p in parts])

    @dask.delayed(pure=True)
    def total(parts):
        return float(sum(p.sum() for p in parts))

    n = side(2_000_000)
    parts = [process(load(i, n)) for i in range(32)]
    groups = [summarize(parts[i:i + 4]) for i in range(0, 32, 4)]
    out["pipeline"] = ("delayed: 32 x load(%d MB) -> sort -> 8 summaries of 4 -> total" % (n * 8 // 10**6),
                       total(groups))
    return out


def export(out_dir, scale):
    import dask
    import dask.local
    from dask.callbacks import Callback
    from dask.core import get_deps
    from dask.sizeof import sizeof

    os.makedirs(out_dir, exist_ok=True)
    for name, (description, coll) in graphs(scale).items():
        began = time.perf_counter()
        (opt,) = dask.optimize(coll)
        dsk = dict(opt.__dask_graph__())
        deps, _ = get_deps(dsk)
        start, took, size = {}, {}, {}

        class Record(Callback):
            def _pretask(self, key, dsk, state):
                start[key] = time.perf_counter()

            def _posttask(self, key, result, dsk, state, id):
                took[key] = time.perf_counter() - start[key]
                size[key] = int(sizeof(result))

        keys = opt.__dask_keys__()
        flat = []

        def flatten(k):
            if isinstance(k, list):
                for v in k:
                    flatten(v)
            else:
                flat.append(k)
        flatten(keys)
        with Record():
            dask.local.get_sync(dsk, flat)
        # Topological order: Kahn's, ties by the key's text so the file is stable.
        order, index, pending = [], {}, {k: set(d) for k, d in deps.items()}
        ready = sorted((k for k, d in pending.items() if not d), key=str)
        dependents = {k: [] for k in deps}
        for k, d in deps.items():
            for dep in d:
                dependents[dep].append(k)
        while ready:
            k = ready.pop(0)
            index[k] = len(order)
            order.append(k)
            for child in sorted(dependents[k], key=str):
                pending[child].discard(k)
                if not pending[child]:
                    ready.append(child)
        if len(order) != len(deps):
            raise RuntimeError("%s: the graph has a cycle" % name)
        # A key the scheduler never ran as a task (a literal in the graph)
        # costs no time; its bytes are its value's.
        tasks = [{"deps": sorted(index[d] for d in deps[k]), "seconds": round(took.get(k, 0.0), 6),
                  "bytes": size.get(k) if k in size else int(sizeof(getattr(dsk[k], "value", dsk[k])))}
                 for k in order]
        doc = {"name": name, "description": description, "dask_version": dask.__version__, "scale": scale,
               "tasks": tasks, "sinks": [index[k] for k in flat]}
        path = os.path.join(out_dir, name + ".json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        total_bytes = sum(t["bytes"] for t in tasks)
        print("%-14s %5d tasks, %7.1f MB produced, %6.2f s of work (%.1f s to export): %s"
              % (name, len(tasks), total_bytes / 1e6, sum(t["seconds"] for t in tasks),
                 time.perf_counter() - began, path), file=sys.stderr)


# --- replay -------------------------------------------------------------------

def replay(path, mode, timeout):
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ["DASK_LOGGING__DISTRIBUTED"] = "error"
    import logging
    from distributed import Client, LocalCluster, wait

    def emit(doc):
        out.write(json.dumps(doc) + "\n")
        out.flush()

    def watchdog():
        emit({"error": "timeout: the graph did not finish within %gs" % timeout})
        os._exit(3)
    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()

    with open(path) as f:
        doc = json.load(f)
    tasks = doc["tasks"]

    def key(i):
        return "t%d" % i

    def build(prefix, tasks):
        return {prefix + key(i): (synth, i, t["seconds"], t["bytes"], [prefix + key(d) for d in t["deps"]])
                for i, t in enumerate(tasks)}

    if mode == "processes":
        kw = dict(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1")
    else:
        kw = dict(n_workers=1, threads_per_worker=2, processes=False)
    try:
        with LocalCluster(dashboard_address=":0", silence_logs=logging.ERROR, **kw) as cluster, \
                Client(cluster) as client:
            client.wait_for_workers(kw["n_workers"])
            warm = [{"deps": [], "seconds": 0.0, "bytes": 10}] * 3 + [{"deps": [0, 1, 2], "seconds": 0.0, "bytes": 10}]
            wait(client.get(build("warm-", warm), ["warm-t3"], sync=False))
            dsk = build("", tasks)
            emit({"ready": True})
            t0 = time.perf_counter()
            futures = client.get(dsk, [key(s) for s in doc["sinks"]], sync=False)
            wait(futures)
            seconds = time.perf_counter() - t0
            failed = [f for f in futures if f.status != "finished"]
            if failed:
                emit({"error": "a task failed: %r" % failed[0].exception()})
                return 1
            emit({"seconds": seconds, "tasks": len(tasks)})
            return 0
    except Exception as e:  # reported on the JSON line, which the benchmark reads
        emit({"error": "%s: %s" % (type(e).__name__, e)})
        return 1


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("out_dir")
    e.add_argument("--scale", type=float, default=1.0)
    r = sub.add_parser("replay")
    r.add_argument("graph")
    r.add_argument("--mode", choices=["processes", "threads"], default="processes")
    r.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    if args.cmd == "export":
        export(args.out_dir, args.scale)
        return 0
    return replay(args.graph, args.mode, args.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
