#!/usr/bin/env python3
"""mulproc.Queue against faster-fifo and multiprocessing.Queue from Python.

The parent feeds small tasks, a tuple of an int and 64 bytes, to 4 worker
processes (fork) through one queue; each worker counts what it receives
until its sentinel and reports the count. A run times the parent from the
first put to the last count (every task received); tasks/s = N / time.

Each scenario runs its two sides in turn, A B A B A B (``--rounds``), and
prints one line: both rates of the last round and the median of the
per-round ratios A/B (this machine's figures move 2-4x between minutes;
ratios taken seconds apart much less).

    python3 benches/python_queue.py [--tasks N] [--rounds R] [--only ff,mp,bytes]

Run with any python3: it makes a throwaway virtual environment under
target/bench-pyvenv (faster-fifo, and mulproc built by maturin) and
re-runs itself there.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "bench-pyvenv")
WORKERS = 4
PAYLOAD = bytes(range(64))


def ensure_venv():
    """Re-executes inside target/bench-pyvenv, made and filled if needed."""
    py = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.prefix) == os.path.abspath(VENV):
        return
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "faster-fifo==1.5.2", "maturin>=1.5,<2"], check=True)
    env = dict(os.environ, VIRTUAL_ENV=VENV, PATH=os.path.join(VENV, "bin") + os.pathsep + os.environ["PATH"])
    subprocess.run(
        [os.path.join(VENV, "bin", "maturin"), "develop", "--release", "--quiet",
         "-m", os.path.join(ROOT, "python", "Cargo.toml")],
        check=True, cwd=ROOT, env=env,
    )
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


# --- the contenders: (make queue, put, get, task, sentinel) -------------

def make(kind):
    import multiprocessing as mp

    if kind == "mulproc":
        import mulproc

        q = mulproc.Queue(1024, 256)
        return q, q.put, lambda: q.get(), (0, PAYLOAD), None
    if kind == "mulproc-bytes":
        import mulproc

        q = mulproc.Queue(1024, 256)
        return q, q.put_bytes, lambda: q.get_bytes(), b"\x00" * 8 + PAYLOAD, b""
    if kind == "faster-fifo":
        import faster_fifo

        q = faster_fifo.Queue(max_size_bytes=1024 * 256)
        return q, lambda o: q.put(o, timeout=100), lambda: q.get(timeout=100), (0, PAYLOAD), None
    if kind == "mp":
        q = mp.Queue()
        return q, q.put, q.get, (0, PAYLOAD), None
    if kind == "mp-bytes":
        q = mp.Queue()
        return q, q.put, q.get, b"\x00" * 8 + PAYLOAD, b""
    raise ValueError(kind)


def worker(get, sentinel, report):
    report.put("ready")
    n = 0
    while True:
        t = get()
        if t == sentinel:
            break
        n += 1
    report.put(n)


def run(kind, tasks):
    """Tasks per second for one run of `kind`."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    q, put, get, task, sentinel = make(kind)
    report = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(get, sentinel, report)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for _ in procs:
        assert report.get(timeout=60) == "ready"
    start = time.perf_counter()
    for _ in range(tasks):
        put(task)
    for _ in procs:
        put(sentinel)
    got = sum(report.get(timeout=600) for _ in procs)
    took = time.perf_counter() - start
    for p in procs:
        p.join()
    assert got == tasks, (kind, got, tasks)
    return tasks / took


SCENARIOS = [
    ("ff", "pickled (int, 64 B) tuples, 1 -> 4 workers: mulproc.Queue vs faster-fifo", "mulproc", "faster-fifo"),
    ("mp", "pickled (int, 64 B) tuples, 1 -> 4 workers: mulproc.Queue vs multiprocessing.Queue", "mulproc", "mp"),
    ("bytes", "raw 72-byte messages, 1 -> 4 workers: mulproc put_bytes/get_bytes vs multiprocessing.Queue", "mulproc-bytes", "mp-bytes"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="ff,mp,bytes", help="comma-separated scenarios: ff, mp, bytes")
    args = ap.parse_args()
    only = set(args.only.split(","))
    ensure_venv()
    print(f"{args.tasks} tasks per run, {WORKERS} workers, {args.rounds} rounds A B A B ...")
    for key, title, a, b in SCENARIOS:
        if key not in only:
            continue
        ratios = []
        for _ in range(args.rounds):
            ra = run(a, args.tasks)
            rb = run(b, args.tasks)
            ratios.append(ra / rb)
        print(
            f"{title}: {ra / 1e3:.0f} k vs {rb / 1e3:.0f} k tasks/s (last round); "
            f"ratios {' '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
