"""Laneway's driver for RQ (issue 5, `cargo xtask bench-peers`).

xtask installs the pinned rq into the venv target/peers/rq-venv, whose python runs this file
from where it is (peer_jobs.py beside it is on sys.path). One mode per process; it prints
`ready` (a worker that has started and gone idle) and ends with one `result {json}` line
(or `error <why>`), which `laneway-bench peers` parses.

    python bench.py REDIS_URL version
    python bench.py REDIS_URL produce-single N CAP_S
    python bench.py REDIS_URL produce-concurrent N PRODUCERS CAP_S
    python bench.py REDIS_URL produce-batch N BATCH CAP_S
    python bench.py REDIS_URL fill N
    python bench.py REDIS_URL latency N RATE
    python bench.py REDIS_URL work EXPECT CONCURRENCY CAP_S

RQ is used as documented: `Queue.enqueue` per job, `Queue.enqueue_many` (one pipeline) per
batch, and a `SimpleWorker`, which runs jobs in its own process one at a time: CONCURRENCY
is ignored, RQ has no concurrency within a worker process. The worker blocks on Redis for new
jobs (BLPOP, no polling). Its per-job log lines are turned down to WARNING; everything else is
RQ's default (results kept 500 s, a 180 s job timeout armed with SIGALRM per job). "50
producers" are 50 threads sharing one redis-py connection pool: RQ's client is synchronous.
Times: `time.time_ns` (wall clock) for the producer's `t` in µs.
"""

import json
import os
import sys
import threading
import time

from redis import Redis
from rq import Queue, SimpleWorker

# No __pycache__ beside the committed scripts.
sys.dont_write_bytecode = True
import peer_jobs  # noqa: E402

QUEUE = "bench"


def emit(value):
    sys.stdout.write("result " + json.dumps(value) + "\n")
    sys.stdout.flush()


def vm_hwm_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def produce(conn, n, producers, batch, cap_s):
    lock = threading.Lock()
    counters = {"next": 0, "done": 0}
    step = batch or 1
    started = time.perf_counter()
    deadline = started + cap_s
    errors = []

    def producer():
        queue = Queue(QUEUE, connection=conn)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    start = counters["next"]
                    if start >= n:
                        return
                    end = min(start + step, n)
                    counters["next"] = end
                if batch is None:
                    queue.enqueue(peer_jobs.noop, {"i": start})
                else:
                    datas = [Queue.prepare_data(peer_jobs.noop, ({"i": i},)) for i in range(start, end)]
                    queue.enqueue_many(datas)
                with lock:
                    counters["done"] += end - start
        except Exception as e:  # reported by the main thread
            errors.append(e)

    if producers == 1:
        producer()
    else:
        threads = [threading.Thread(target=producer) for _ in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    emit({"jobs": counters["done"], "elapsed_s": time.perf_counter() - started})


def paced(conn, n, rate):
    queue = Queue(QUEUE, connection=conn)
    period = 1.0 / rate
    started = time.perf_counter()
    for i in range(n):
        wait = started + i * period - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        queue.enqueue(peer_jobs.noop, {"i": i, "t": time.time_ns() / 1000})
    emit({"jobs": n, "elapsed_s": time.perf_counter() - started})


def work(conn, expect, cap_s):
    state = peer_jobs.STATE
    done = {"completed": 0}

    def finish():
        first = state["first"]
        emit(
            {
                "completed": done["completed"],
                "elapsed_s": 0.0 if first is None else time.perf_counter() - first,
                "vm_hwm_kib": vm_hwm_kib(),
                "latencies_us": state["latencies_us"],
            }
        )
        os._exit(0)

    class BenchWorker(SimpleWorker):
        """Counts completions: a job is complete once RQ has recorded its success."""

        def handle_job_success(self, *args, **kwargs):
            # RQ 2 and RQ 3 pass different arguments; hand them all through.
            super().handle_job_success(*args, **kwargs)
            done["completed"] += 1
            first = state["first"]
            if done["completed"] >= expect or (first is not None and time.perf_counter() - first >= cap_s):
                finish()

    worker = BenchWorker([Queue(QUEUE, connection=conn)], connection=conn)

    def announce():
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    threading.Timer(0.2, announce).start()
    worker.work(logging_level="WARNING")


def version():
    from importlib.metadata import version as installed

    emit(
        {
            "peer": "rq",
            "version": installed("rq"),
            "runtime": "Python %s, redis-py %s" % (sys.version.split()[0], installed("redis")),
        }
    )


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    url, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "version":
        version()
        return
    conn = Redis.from_url(url)
    if mode == "produce-single":
        produce(conn, int(args[0]), 1, None, float(args[1]))
    elif mode == "produce-concurrent":
        produce(conn, int(args[0]), int(args[1]), None, float(args[2]))
    elif mode == "produce-batch":
        produce(conn, int(args[0]), 1, int(args[1]), float(args[2]))
    elif mode == "fill":
        produce(conn, int(args[0]), 1, 1000, 3600.0)
    elif mode == "latency":
        paced(conn, int(args[0]), float(args[1]))
    elif mode == "work":
        work(conn, int(args[0]), float(args[2]))
    else:
        raise ValueError("unknown mode %r" % mode)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the runner reads why from this line
        sys.stdout.write("error %s: %s\n" % (type(e).__name__, str(e).replace("\n", " ")))
        sys.stdout.flush()
        sys.exit(1)
