#!/usr/bin/env python3
"""Worker-pool throughput: the mulproc::pool API against the hand-written
pool on the raw queues (pool_by_hand) and against Python's
multiprocessing.Pool.imap_unordered (chunksize 1 and 64).

    python3 benches/compare_pool.py [--rounds 3] [--workers 4]
        [--tasks 2000000] [--py-tasks 100000] [--by-hand CMD]

4 workers, 64-byte tasks, every result checked on every side. Each row runs
its two commands in turn, A B A B A B (this shared machine drifts by 2-4x
between minutes, a ratio of two runs seconds apart much less), and prints
the ratio of each round and their median. Rates come from the last line of
each run's stdout, `tasks_per_sec=<value>`.

- A: `examples/worker_pool` (mulproc::pool), built here with cargo.
- pool_by_hand: the pool written by hand on the queues. Give its command
  with --by-hand (it is passed `--workers W --tasks N` and must print
  `tasks_per_sec=`); without it the script looks for an executable named
  pool_by_hand under target/release and benches/tools/target/release.
- Python: this file run with --python-pool, a multiprocessing.Pool of W
  processes mapping (id, 64 bytes) -> (id, crc32) with imap_unordered
  (--py-tasks tasks with chunksize 64, a quarter of them with chunksize 1).
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"by_hand": 0.9, "mp_chunk1": 50.0, "mp_chunk64": 10.0}


# ------------------------------------------------------ the Python pool ---

def py_task(i):
    return i, i.to_bytes(8, "little") * 8  # 64 bytes


def py_work(task):
    i, data = task
    return i, zlib.crc32(data)


def python_pool(workers, tasks, chunksize):
    import multiprocessing

    seen = bytearray(tasks)
    with multiprocessing.Pool(workers) as pool:
        start = time.perf_counter()
        for i, crc in pool.imap_unordered(py_work, (py_task(i) for i in range(tasks)), chunksize):
            if seen[i] or crc != zlib.crc32(py_task(i)[1]):
                sys.exit(f"task {i}: wrong or repeated result")
            seen[i] = 1
        elapsed = time.perf_counter() - start
    if not all(seen):
        sys.exit("a task got no result")
    print(f"tasks_per_sec={tasks / elapsed:.1f}")


# ---------------------------------------------------------- the driver ---

def rate(cmd):
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    last = out.strip().splitlines()[-1]
    if not last.startswith("tasks_per_sec="):
        sys.exit(f"{cmd}: last line is {last!r}, not tasks_per_sec=")
    return float(last.split("=", 1)[1])


def find_by_hand():
    for d in ("target/release", "target/release/examples", "benches/tools/target/release",
              "benches/tools/target/release/examples"):
        p = os.path.join(ROOT, d, "pool_by_hand")
        if os.access(p, os.X_OK):
            return [p]
    return None


def row(name, a, b, rounds):
    ratios, ra, rb = [], [], []
    for _ in range(rounds):
        x, y = rate(a), rate(b)
        ra.append(x)
        rb.append(y)
        ratios.append(x / y)
    med = statistics.median(ratios)
    target = TARGETS[name]
    print(f"{name}: pool API {statistics.median(ra) / 1e6:.3f} M tasks/s, peer "
          f"{statistics.median(rb) / 1e6:.3f} M tasks/s; ratios "
          f"{' '.join(f'{r:.3g}' for r in ratios)}; median {med:.3g} "
          f"(target >= {target}: {'met' if med >= target else 'missed'})", flush=True)
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=2_000_000, help="tasks per Rust run")
    ap.add_argument("--py-tasks", type=int, default=100_000, help="tasks per Python run")
    ap.add_argument("--by-hand", help="command of the hand-written pool")
    ap.add_argument("--python-pool", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--chunksize", type=int, default=1, help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.python_pool:
        return python_pool(o.workers, o.py_tasks, o.chunksize)

    subprocess.run(["cargo", "build", "--release", "--example", "worker_pool"], cwd=ROOT, check=True)
    w = ["--workers", str(o.workers)]
    api = [os.path.join(ROOT, "target/release/examples/worker_pool"), *w,
           "--tasks", str(o.tasks), "--size", "64"]
    by_hand = shlex.split(o.by_hand) if o.by_hand else find_by_hand()
    if by_hand:
        row("by_hand", api, [*by_hand, *w, "--tasks", str(o.tasks)], o.rounds)
    else:
        print("by_hand: skipped (no pool_by_hand executable found; give --by-hand CMD)")
    for chunk in (1, 64):
        # chunksize 1 is slow: a quarter of the tasks takes as long.
        n = o.py_tasks if chunk > 1 else max(1, o.py_tasks // 4)
        py = [sys.executable, os.path.abspath(__file__), "--python-pool", *w,
              "--py-tasks", str(n), "--chunksize", str(chunk)]
        row(f"mp_chunk{chunk}", api, py, o.rounds)


if __name__ == "__main__":
    main()
