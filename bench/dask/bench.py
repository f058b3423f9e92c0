#!/usr/bin/env python3
"""Dask half of shoal's side-by-side benchmark: one case per process.

    python bench/dask/bench.py CASE [--mode processes|threads] [--rounds R] [case options]

The last line of stdout is one JSON object (see README.md); everything else,
including the workers' output, goes to stderr.  Exit status: 0 on success,
1 if the case failed, 2 on bad arguments, 3 if the watchdog fired -- the JSON
line is printed in every case, with an "error" field when something went wrong.
"""
import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time


# --- task bodies --------------------------------------------------------------
# Kept trivial so that what is measured is the runtime's overhead, not the
# work.  They live in __main__, so cloudpickle ships them to workers by value.

def noop(x):
    return x


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def count_letters(path):
    # The original Dask demo: read a file, sort its bytes, count them.
    with open(path, "rb") as f:
        data = f.read()
    return len(sorted(data))


def produce(nbytes):
    return b"x" * nbytes


def consume(data):
    # Touch one byte per 4 KiB page so the data is really there, cheaply.
    return len(data), sum(data[::4096])


# --- cases --------------------------------------------------------------------
# Each case is `setup(client, args) -> run`, where run() does one round and
# returns (wall_seconds, info); only what run() times is reported as a sample.

def case_count_letters(client, args):
    if args.files is None:
        names = sorted(n for n in os.listdir(args.dir)
                       if n.startswith("part-") and n.endswith(".txt"))
    else:
        names = ["part-%05d.txt" % i for i in range(args.files)]
    paths = [os.path.abspath(os.path.join(args.dir, n)) for n in names]
    missing = [p for p in paths if not os.path.exists(p)]
    if not paths or missing:
        raise FileNotFoundError("no input files" if not paths else missing[0])
    args.n = len(paths)

    def run():
        t0 = time.perf_counter()
        futs = client.map(count_letters, paths, pure=False)
        total = sum(client.gather(futs))
        dt = time.perf_counter() - t0
        return dt, {"total_count": total}
    return run


def case_map_noop(client, args):
    n = args.n

    def run():
        t0 = time.perf_counter()
        futs = client.map(noop, range(n), pure=False)
        res = client.gather(futs)
        dt = time.perf_counter() - t0
        assert sum(res) == n * (n - 1) // 2
        return dt, {}
    return run


def case_tree(client, args):
    from dask import delayed
    leaves = args.leaves
    # pure=False gives fresh keys every round, so nothing can be served from a
    # previous round's results and no key is resubmitted while being released.
    dnoop = delayed(noop, pure=False)
    dadd = delayed(add, pure=False)

    def run():
        b0 = time.perf_counter()
        level = [dnoop(i) for i in range(leaves)]
        while len(level) > 1:
            nxt = [dadd(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])  # odd one out moves up a level as is
            level = nxt
        root = level[0]
        t0 = time.perf_counter()
        res = client.compute(root).result()
        dt = time.perf_counter() - t0
        assert res == leaves * (leaves - 1) // 2
        return dt, {"build_s": t0 - b0}
    return run


def case_chain(client, args):
    n = args.n

    def run():
        t0 = time.perf_counter()
        x = client.submit(inc, 0, pure=False)
        for _ in range(n - 1):
            # The natural Dask idiom: intermediate futures are dropped by the
            # client and kept alive only as dependencies of the next task.
            x = client.submit(inc, x, pure=False)
        res = x.result()
        dt = time.perf_counter() - t0
        assert res == n
        return dt, {}
    return run


def case_roundtrip(client, args):
    n = args.n

    def run():
        lat = []
        t00 = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            r = client.submit(noop, i, pure=False).result()
            lat.append(time.perf_counter() - t0)
            assert r == i
        return time.perf_counter() - t00, {"per_call_s": lat}
    return run


def case_transfer(client, args):
    from distributed import wait
    nbytes = args.mb * 2 ** 20
    workers = sorted(client.scheduler_info()["workers"])
    src, dst = workers[0], workers[-1]  # the same worker in threads mode

    def run():
        a = client.submit(produce, nbytes, workers=[src],
                          allow_other_workers=False, pure=False)
        wait(a)  # the producer's output sits in worker A's memory...
        t0 = time.perf_counter()  # ...before the clock starts
        b = client.submit(consume, a, workers=[dst],
                          allow_other_workers=False, pure=False)
        length, checksum = b.result()
        dt = time.perf_counter() - t0
        assert length == nbytes and checksum == ord("x") * len(range(0, nbytes, 4096))
        return dt, {}
    return run


def case_bag_wordcount(client, args):
    # The Dask Bag program: word frequencies of text files, top 10.
    import dask
    import dask.bag as db
    names = sorted(n for n in os.listdir(args.dir) if n.startswith("text-") and n.endswith(".txt"))
    if args.files is not None:
        names = names[:args.files]
    paths = [os.path.abspath(os.path.join(args.dir, n)) for n in names]
    if not paths:
        raise FileNotFoundError("no text-*.txt in %s" % args.dir)
    args.n = len(paths)

    def graph():
        return db.read_text(paths).str.split().flatten().frequencies().topk(10, key=1)

    def cpu():
        # CPU seconds of this process (the scheduler, and the workers in
        # the threads mode), of every worker process (processes and cli
        # modes) and of the scheduler's process (cli mode).
        own = time.process_time()
        if args.mode == "threads":
            return own
        workers = sum(client.run(time.process_time).values())
        if args.mode == "cli":
            workers += client.run_on_scheduler(time.process_time)
        return own + workers

    def run():
        c0 = cpu()
        t0 = time.perf_counter()
        top = graph().compute()
        dt = time.perf_counter() - t0
        cpu_s = cpu() - c0
        g = graph()
        (opt,) = dask.optimize(g)
        return dt, {"top_counts": [n for _, n in top], "tasks": len(g.__dask_graph__()),
                    "tasks_optimized": len(opt.__dask_graph__()), "cpu_s": cpu_s}
    return run


CASES = {
    "bag_wordcount": case_bag_wordcount,
    "count_letters": case_count_letters,
    "map_noop": case_map_noop,
    "tree": case_tree,
    "chain": case_chain,
    "roundtrip": case_roundtrip,
    "transfer": case_transfer,
}
# Full sizes, and the --quick ones meant to finish in seconds.
DEFAULTS = {"map_noop": 100000, "chain": 10000, "roundtrip": 1000}
QUICK = {"map_noop": 5000, "chain": 500, "roundtrip": 100, "leaves": 4096, "mb": 64}


# --- plumbing -----------------------------------------------------------------

class Reporter:
    """Writes the single JSON line exactly once, from the main thread or the
    watchdog, whichever gets there first."""

    def __init__(self, out, result):
        self.out, self.result, self.lock, self.done = out, result, threading.Lock(), False

    def emit(self, error=None):
        with self.lock:
            if self.done:
                return False
            self.done = True
            if error is not None:
                self.result["error"] = error
            try:
                line = json.dumps(self.result, allow_nan=False)
            except (RuntimeError, ValueError):
                # The watchdog raced the main thread mid-update: keep the essentials.
                line = json.dumps({k: self.result[k] for k in
                                   ("system", "case", "mode", "n", "error")
                                   if k in self.result} | {"samples_s": [], "extra": {}})
            self.out.write(line + "\n")
            self.out.flush()
            return True


def settle(client, timeout=60.0):
    """Wait until the scheduler has forgotten the previous round's tasks, so
    releasing them is not billed to the next round."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0:
            return
        time.sleep(0.02)


def describe(e):
    """The exception and its causes, innermost last: dask wraps the useful
    part (e.g. why a cluster failed to start) in generic RuntimeErrors."""
    parts = []
    while e is not None and len(parts) < 5:
        parts.append("%s: %s" % (type(e).__name__, e))
        e = e.__cause__ or e.__context__
    return " <- ".join(parts)


def kill_children():
    # Only processes this script started (the spawned workers), by pid.
    try:
        import psutil
        for p in psutil.Process().children(recursive=True):
            p.kill()
    except Exception:
        pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--mode", choices=["processes", "threads", "cli"], default="processes")
    p.add_argument("--scheduler-file", default=None,
                   help="--mode cli: the JSON file of a running `dask scheduler --scheduler-file F` "
                        "(its workers started by `dask worker --scheduler-file F`); the script connects to it "
                        "instead of starting a LocalCluster")
    p.add_argument("--workers", type=int, default=2,
                   help="--mode cli: how many workers to wait for")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed warm-up rounds before the timed ones (0: none)")
    p.add_argument("--warmup-size", type=int, default=None,
                   help="cap the warm-up rounds' size (tasks, leaves, MiB or files) "
                        "at this; default: the timed size")
    p.add_argument("--timeout", type=float, default=600, help="whole-run watchdog, seconds")
    p.add_argument("--quick", action="store_true", help="small default sizes")
    p.add_argument("--saturation", type=float, default=None,
                   help="distributed.scheduler.worker-saturation (Dask's default "
                        "1.1 queues tasks on the scheduler; inf sends them all at once)")
    p.add_argument("--memory-limit", default="auto",
                   help="per worker, e.g. 2GiB (default: Dask's, RAM / workers)")
    p.add_argument("--dir", help="count_letters: folder of part-NNNNN.txt; bag_wordcount: of text-NNNN.txt")
    p.add_argument("--files", type=int, help="count_letters, bag_wordcount: how many (default: all)")
    p.add_argument("--n", type=int, help="map_noop/chain/roundtrip: tasks or calls")
    p.add_argument("--leaves", type=int, help="tree: leaves (default 65536)")
    p.add_argument("--mb", type=int, help="transfer: MiB moved (default 1024)")
    a = p.parse_args(argv)
    if a.n is None:
        a.n = (QUICK if a.quick else DEFAULTS).get(a.case)
    if a.leaves is None:
        a.leaves = QUICK["leaves"] if a.quick else 65536
    if a.mb is None:
        a.mb = QUICK["mb"] if a.quick else 1024
    if a.case in ("count_letters", "bag_wordcount") and not a.dir:
        p.error("%s needs --dir" % a.case)
    if a.rounds < 1 or (a.n is not None and a.n < 1) or a.leaves < 1 or a.mb < 1:
        p.error("sizes and --rounds must be >= 1")
    if (a.mode == "cli") != (a.scheduler_file is not None):
        p.error("--mode cli and --scheduler-file go together")
    if a.warmup < 0 or (a.warmup_size is not None and a.warmup_size < 1):
        p.error("--warmup must be >= 0 and --warmup-size >= 1")
    return a


def main(argv):
    try:
        args = parse_args(argv)
    except SystemExit as e:
        if e.code:  # bad arguments (argparse told why on stderr): still one JSON line
            case = argv[0] if argv and not argv[0].startswith("-") else None
            print(json.dumps({"system": "dask", "case": case, "mode": None, "samples_s": [],
                              "n": None, "extra": {}, "error": "bad arguments, see stderr"}))
        raise
    # Keep fd 1 for the JSON line only: point it at stderr so that anything
    # else printed -- by dask, or by the workers, which inherit it -- lands there.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    # Via the environment so the spawned workers, which set up logging when
    # they import distributed, are quiet too.
    os.environ["DASK_LOGGING__DISTRIBUTED"] = "error"
    import dask
    import distributed
    from distributed import Client, LocalCluster

    result = {"system": "dask", "case": args.case, "mode": args.mode,
              "samples_s": [], "n": None, "extra": {}}
    extra = result["extra"]
    rep = Reporter(out, result)

    def watchdog():
        if rep.emit("timeout: case did not finish within %gs" % args.timeout):
            kill_children()
            os._exit(3)
    timer = threading.Timer(args.timeout, watchdog)
    timer.daemon = True
    timer.start()

    if args.saturation is not None and args.mode == "cli":
        rep.emit("--saturation configures a scheduler in this process; --mode cli connects to another")
        return 2
    if args.saturation is not None:
        # The scheduler lives in this process, so setting it here is enough.
        dask.config.set({"distributed.scheduler.worker-saturation": args.saturation})
    extra.update(dask_version=dask.__version__, distributed_version=distributed.__version__,
                 python=sys.version.split()[0], rounds=args.rounds,
                 # str() keeps inf out of the JSON, which has no such number
                 worker_saturation=str(dask.config.get("distributed.scheduler.worker-saturation")))
    if args.mode == "processes":
        # What LocalCluster() picks by itself on a 2-core machine.
        kw = dict(n_workers=2, threads_per_worker=1, processes=True)
    elif args.mode == "cli":
        # Started by the caller with Dask's CLI; what they are is its business.
        kw = dict(n_workers=args.workers)
    else:
        kw = dict(n_workers=1, threads_per_worker=2, processes=False)
    if args.mode != "cli":
        kw["memory_limit"] = args.memory_limit
    extra.update(kw)
    if args.mode == "processes":
        kw["host"] = "127.0.0.1"  # TCP on loopback only; threads mode uses inproc://

    client = cluster = None
    error = None
    try:
        t0 = time.perf_counter()
        # ":0": the scheduler's HTTP server starts even with None, on 8787;
        # a random port cannot clash with anything else running.
        extra["phase"] = "setup"
        if args.mode == "cli":
            client = Client(scheduler_file=args.scheduler_file, timeout=60)
        else:
            cluster = LocalCluster(dashboard_address=":0",
                                   silence_logs=logging.ERROR, **kw)
            client = Client(cluster)
        client.wait_for_workers(kw["n_workers"])
        extra["setup_s"] = time.perf_counter() - t0

        run = CASES[args.case](client, args)
        result["n"] = {"tree": args.leaves, "transfer": args.mb}.get(args.case, args.n)
        if args.case == "tree":
            extra["tasks"] = 2 * args.leaves - 1
            extra["build_s"] = []
        if args.case == "transfer":
            extra["bytes"] = args.mb * 2 ** 20
            extra["measures_transfer"] = args.mode == "processes"
            if args.mode == "threads":
                extra["note"] = "one worker: producer and consumer share it, no data moves"
        if args.case == "roundtrip":
            # Samples are every single call of the timed rounds, so their
            # median is the median single-call latency.
            extra["samples_are"] = "per_call"
            extra["round_s"], extra["round_median_call_s"] = [], []

        extra["phase"] = "warmup"
        extra["warmup_rounds"] = args.warmup
        warm = run
        if args.warmup and args.warmup_size is not None:
            # A smaller round of the same case: it starts the same code paths
            # (functions shipped, connections opened, task durations learnt)
            # without costing a whole round of a big case.
            wargs = argparse.Namespace(**vars(args))
            for field in ("n", "leaves", "mb", "files"):
                if getattr(wargs, field) is not None:
                    setattr(wargs, field, min(getattr(wargs, field), args.warmup_size))
            if args.case in ("count_letters", "bag_wordcount") and wargs.files is None:
                wargs.files = args.warmup_size
            warm = CASES[args.case](client, wargs)
            extra["warmup_size"] = args.warmup_size
        extra["warmup_s"] = sum(warm()[0] for _ in range(args.warmup))
        settle(client)
        for i in range(args.rounds):
            extra["phase"] = "round %d" % (i + 1)
            dt, info = run()
            if args.case == "roundtrip":
                result["samples_s"].extend(info["per_call_s"])
                extra["round_s"].append(dt)
                extra["round_median_call_s"].append(statistics.median(info["per_call_s"]))
            else:
                result["samples_s"].append(dt)
            if "build_s" in info:
                extra["build_s"].append(info["build_s"])
            if "total_count" in info:
                extra["total_count"] = info["total_count"]
            for k in ("top_counts", "tasks", "tasks_optimized"):
                if k in info:
                    extra[k] = info[k]
            if "cpu_s" in info:
                extra.setdefault("cpu_s", []).append(info["cpu_s"])
            settle(client)
        extra["median_s"] = statistics.median(result["samples_s"])
        del extra["phase"]  # kept only when the case did not finish
    except BaseException as e:  # incl. KeyboardInterrupt: still report
        error = describe(e)
    finally:
        t1 = time.perf_counter()
        for closer in (client, cluster):
            try:
                if closer is not None:
                    closer.close(timeout=30)
            except Exception as e:
                print("close failed: %r" % e, file=sys.stderr)
        extra["teardown_s"] = time.perf_counter() - t1
    rep.emit(error)
    timer.cancel()
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
