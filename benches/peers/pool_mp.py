#!/usr/bin/env python3
"""Python's multiprocessing.Pool over the worker-pool tasks: the comparison target for mulproc's pool.

T tasks `(id, payload)`, the payload `--size` bytes (default 64: the id as a
little-endian u64, then a splitmix64 stream seeded with the id), go through
`multiprocessing.Pool(W).imap_unordered(task, tasks, chunksize)`; each worker
answers `(id, checksum)` with the checksum of mulproc's `examples/worker_pool.rs`
and of `peer --system procspawn` (FNV-1a style over 64-bit words, the last one
zero-padded, folded to 32 bits, plus the id). The parent checks every answer
and that each task is answered exactly once.

Payloads and expected checksums are made before the clock starts (in Python
they cost more than the hand-over being measured); the clock runs from the
first task handed to the pool to the last result checked. A warm-up run of
`--warmup` tasks goes first, after the workers have started. A worker that
dies mid-task makes the run fail after `--timeout-s` instead of hanging.

    python3 benches/peers/pool_mp.py --workers 4 --tasks 200000 --chunksize 64

The last stdout line is `tasks_per_sec=<value>`; a `# ...` detail line comes
before it.
"""

import argparse
import multiprocessing
import os
import sys
import threading
import time

MASK64 = (1 << 64) - 1
PRIME = 0x0000_0100_0000_01B3


def fill_task(task_id, size):
    """Task `task_id`'s payload: the id, then a splitmix64 stream seeded with it."""
    out = bytearray(task_id.to_bytes(8, "little"))
    state = task_id ^ 0x6D75_6C70_726F_6321
    while len(out) < size:
        state = (state + 0x9E37_79B9_7F4A_7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & MASK64
        z ^= z >> 31
        out += z.to_bytes(8, "little")
    return bytes(out[:size])


def checksum(task_id, payload):
    """FNV-1a style over 64-bit little-endian words (last one zero-padded), folded to 32 bits, plus the id."""
    h = 0xCBF2_9CE4_8422_2325
    for i in range(0, len(payload), 8):
        w = int.from_bytes(payload[i:i + 8], "little")  # a short tail reads as zero-padded
        h = ((h ^ w) * PRIME) & MASK64
        h = ((h << 29) | (h >> 35)) & MASK64
    return (((h >> 32) ^ h) + task_id) & 0xFFFF_FFFF


def task(item):
    """What a worker runs: answers (id, checksum)."""
    task_id, payload = item
    return task_id, checksum(task_id, payload)


def make_tasks(first, n, size):
    tasks = [(i, fill_task(i, size)) for i in range(first, first + n)]
    expected = [checksum(i, p) for i, p in tasks]
    return tasks, expected


class Watchdog:
    """Ends the process (and the pool's workers) if, while armed, no result came for `timeout` seconds.

    A pool worker that dies mid-task loses the task and the pool waits for it
    forever; with chunksize > 1, imap_unordered's iterator has no timeout.
    """

    def __init__(self, timeout):
        self.timeout = timeout
        self.last = None  # None: not armed
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while True:
            time.sleep(min(0.5, self.timeout))
            last = self.last
            if last is not None and time.monotonic() - last > self.timeout:
                print(f"error: no result for {self.timeout:g} s (a worker died?)",
                      file=sys.stderr, flush=True)
                for p in multiprocessing.active_children():
                    p.kill()
                os._exit(1)


def run(pool, first, n, size, chunksize, watchdog):
    """Runs tasks first..first+n through the pool, checks every answer; returns the seconds taken."""
    tasks, expected = make_tasks(first, n, size)
    seen = bytearray(n)
    watchdog.last = time.monotonic()  # armed
    start = time.perf_counter()
    for task_id, value in pool.imap_unordered(task, tasks, chunksize):
        watchdog.last = time.monotonic()
        k = task_id - first
        if not 0 <= k < n or seen[k]:
            raise SystemExit(f"error: task {task_id} answered twice or out of range")
        if value != expected[k]:
            raise SystemExit(f"error: task {task_id}: checksum {value:#x}, expected {expected[k]:#x}")
        seen[k] = 1
    elapsed = time.perf_counter() - start
    watchdog.last = None
    if seen.count(1) != n:
        raise SystemExit("error: some tasks got no result")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--chunksize", type=int, default=1,
                    help="tasks per hand-over to a worker (imap_unordered's chunksize)")
    ap.add_argument("--size", type=int, default=64, help="payload bytes, at least 8")
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--start-method", default=None, choices=multiprocessing.get_all_start_methods(),
                    help="multiprocessing start method (default: the platform's)")
    ap.add_argument("--timeout-s", type=float, default=60.0,
                    help="fail if no result comes for this long")
    args = ap.parse_args()
    if args.workers < 1 or args.tasks < 1 or args.chunksize < 1 or args.warmup < 0:
        ap.error("--workers, --tasks and --chunksize must be >= 1, --warmup >= 0")
    if args.timeout_s <= 0:
        ap.error("--timeout-s must be positive")
    if args.size < 8:
        ap.error("--size must be at least 8 (the id travels in each payload)")

    ctx = multiprocessing.get_context(args.start_method)
    with ctx.Pool(args.workers) as pool:
        watchdog = Watchdog(args.timeout_s)
        if args.warmup:
            run(pool, 0, args.warmup, args.size, args.chunksize, watchdog)
        elapsed = run(pool, args.warmup, args.tasks, args.size, args.chunksize, watchdog)
        pool.close()
        pool.join()

    print(f"# multiprocessing.Pool({args.workers}).imap_unordered: tasks={args.tasks} "
          f"chunksize={args.chunksize} size={args.size} "
          f"start={ctx.get_start_method()} elapsed={elapsed:.3f} s")
    rate = args.tasks / elapsed
    print(f"tasks_per_sec={rate:.0f}" if rate >= 1e6 else f"tasks_per_sec={rate:.1f}")


if __name__ == "__main__":
    sys.exit(main())
