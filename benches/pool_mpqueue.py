#!/usr/bin/env python3
"""Worker pool over plain multiprocessing.Queue: the reference for `benches/compare_pymulproc.sh`.

The same pool as `benches/pool_pymulproc.py`, without pymulproc: two
`multiprocessing.Queue`s (tasks, results). The parent sends T tasks (a 64-byte
payload whose first 8 bytes are the task index, little-endian), each worker
sends back `(index, checksum)` with checksum = crc32(payload) + index
(mod 2**32), the parent checks every result and that each task got exactly
one, then puts one `None` poison pill per worker and joins them. The clock runs
from the first send to the last result checked; at most `--window` tasks are
in flight (0: no limit).

    python benches/pool_mpqueue.py --workers 4 --tasks 20000

The last stdout line is `tasks_per_sec=<value>`.
"""

import argparse
import multiprocessing
import os
import queue
import random
import sys
import threading
import time
import zlib


def checksum(index, payload):
    return (zlib.crc32(payload) + index) & 0xFFFFFFFF


def worker(tasks, results):
    while True:
        payload = tasks.get()
        if payload is None:
            return
        index = int.from_bytes(payload[:8], "little")
        results.put((index, checksum(index, payload)))


def make_payloads(n, seed=0x6D756C70):
    blob = random.Random(seed).randbytes(56 * n)
    return [i.to_bytes(8, "little") + blob[56 * i:56 * (i + 1)] for i in range(n)]


def watchdog(processes, done):
    """Fail loudly, not hang, if a worker dies."""
    while not done.wait(0.5):
        for p in processes:
            if p.exitcode is not None:
                print(f"error: worker {p.pid} exited early with code {p.exitcode}",
                      file=sys.stderr, flush=True)
                os._exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--window", type=int, default=1024,
                    help="most tasks in flight at once (0: no limit)")
    args = ap.parse_args()
    if args.workers < 1 or args.tasks < 1 or args.window < 0:
        ap.error("--workers and --tasks must be >= 1, --window >= 0")

    n, window = args.tasks, args.window or args.tasks
    payloads = make_payloads(n)
    tasks = multiprocessing.Queue()
    results = multiprocessing.Queue()
    processes = [multiprocessing.Process(name=f"worker_{i}", target=worker, args=(tasks, results))
                 for i in range(args.workers)]
    for p in processes:
        p.start()
    done = threading.Event()
    threading.Thread(target=watchdog, args=(processes, done), daemon=True).start()

    seen = bytearray(n)
    sent = received = 0

    def check(result):
        nonlocal received
        index, value = result
        if not 0 <= index < n or seen[index]:
            raise SystemExit(f"error: task {index} answered twice or out of range")
        if value != checksum(index, payloads[index]):
            raise SystemExit(f"error: task {index} has a wrong checksum")
        seen[index] = 1
        received += 1

    start = time.perf_counter()
    while received < n:
        while sent < n and sent - received < window:
            tasks.put(payloads[sent])
            sent += 1
        check(results.get())
        # Take whatever else is already there before sending more.
        while received < n:
            try:
                check(results.get_nowait())
            except queue.Empty:
                break
    elapsed = time.perf_counter() - start

    if seen.count(1) != n:
        raise SystemExit("error: some tasks got no result")
    for _ in processes:
        tasks.put(None)
    for p in processes:
        p.join()
    done.set()
    for p in processes:
        if p.exitcode != 0:
            raise SystemExit(f"error: worker {p.pid} exited with code {p.exitcode}")

    print(f"multiprocessing.Queue pool: workers={args.workers} tasks={n} "
          f"window={args.window} elapsed={elapsed:.3f}s")
    print(f"tasks_per_sec={n / elapsed:.1f}")


if __name__ == "__main__":
    main()
