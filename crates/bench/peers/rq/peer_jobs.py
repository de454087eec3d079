"""The job RQ runs in Laneway's benchmark driver (bench.py): a noop that notes, in the worker
process, when the first job started and, for W3, how long after the producer's `t` it started.

A module of its own because RQ stores a job's function by its import path (`peer_jobs.noop`);
the SimpleWorker runs it in the driver's process, so the driver reads `STATE` directly.
"""

import time

STATE = {"first": None, "latencies_us": []}


def noop(payload):
    now_us = time.time_ns() / 1000
    if STATE["first"] is None:
        STATE["first"] = time.perf_counter()
    t = payload.get("t")
    if t is not None:
        STATE["latencies_us"].append(now_us - t)
