#!/usr/bin/env python3
"""mulproc.Pool against multiprocessing.Pool, and mulproc.pymulproc
against pymulproc 0.1.2, from Python.

Pools (4 workers): the parent maps ``work`` over tasks ``(i, 64 bytes)``
with ``imap_unordered``; ``work`` returns ``(i, crc32(payload) + i)``; the
parent checks every result once. A run times the map only (from the first
task to the last result; the pools are started before). Scenarios:

* ``chunksize=1`` and ``chunksize=64``: both pools with the same chunksize;
* ``auto``: mulproc choosing its own batching (``chunksize=None``) against
  multiprocessing at ``chunksize=1`` (its default for imap_unordered);
* ``pymulproc``: ``benches/pool_pymulproc.py`` (1 parent, 4 children, DO
  tasks and FINISHED results over two QueueCommunications) run once with
  ``mulproc.pymulproc`` in place of ``pymulproc`` and once with pymulproc
  0.1.2 itself.

Each scenario runs its two sides in turn, A B A B A B (``--rounds``), and
prints both rates of the last round and the median of the per-round ratios
A/B (this shared machine's figures move 2-4x between minutes; ratios taken
seconds apart move much less), then each pool's CPU time per task (user +
system, median of the rounds): the parent's (all its threads) and its
workers' together (read from /proc). With more processes than cores,
every microsecond a worker spends is taken from the parent too.

    python3 benches/python_pool.py [--rounds R] [--only auto,chunksize=1,...]

Run with any python3: it makes a throwaway virtual environment under
target/bench-pool-venv (pymulproc 0.1.2, and mulproc built by maturin)
and re-runs itself there.
"""

import argparse
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "bench-pool-venv")
WORKERS = 4


def ensure_venv():
    """Re-executes inside target/bench-pool-venv, made and filled if needed."""
    py = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.prefix) == os.path.abspath(VENV):
        return
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run(
            [py, "-m", "pip", "install", "-q", "pymulproc==0.1.2", "maturin>=1.5,<2"], check=True
        )
    env = dict(
        os.environ,
        VIRTUAL_ENV=VENV,
        PATH=os.path.join(VENV, "bin") + os.pathsep + os.environ["PATH"],
    )
    subprocess.run(
        [os.path.join(VENV, "bin", "maturin"), "develop", "--release", "--quiet",
         "-m", os.path.join(ROOT, "python", "Cargo.toml")],
        check=True, cwd=ROOT, env=env,
    )
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


def work(task):
    """The task function of both pools."""
    i, payload = task
    return i, (zlib.crc32(payload) + i) & 0xFFFFFFFF


def make_tasks(n):
    blob = random.Random(0x6D756C70).randbytes(64 * n)
    return [(i, blob[64 * i:64 * (i + 1)]) for i in range(n)]


def worker_pids(pool):
    """The pids of a pool's worker processes (either kind of pool)."""
    if hasattr(pool, "worker_pids"):
        return pool.worker_pids()
    return [p.pid for p in pool._pool]


def cpu_seconds(pids):
    """CPU time (user + system, seconds) of this process (all its threads)
    and of the processes `pids` (from /proc; a pid gone counts 0)."""
    t = os.times()
    mine = t.user + t.system
    tick = os.sysconf("SC_CLK_TCK")
    theirs = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        theirs += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return mine, theirs


def run_map(pool, tasks, chunksize, cpu=None):
    """Tasks/s of one imap_unordered over `tasks`, every result checked.
    `cpu`, a list, gets (parent, workers) CPU microseconds per task."""
    seen = bytearray(len(tasks))
    pids = worker_pids(pool)
    cpu0 = cpu_seconds(pids)
    start = time.perf_counter()
    for i, value in pool.imap_unordered(work, tasks, chunksize=chunksize):
        if seen[i] or value != (zlib.crc32(tasks[i][1]) + i) & 0xFFFFFFFF:
            raise SystemExit(f"error: task {i} answered twice or wrongly")
        seen[i] = 1
    elapsed = time.perf_counter() - start
    cpu1 = cpu_seconds(pids)
    if cpu is not None:
        cpu.append(tuple((b - a) * 1e6 / len(tasks) for a, b in zip(cpu0, cpu1)))
    if seen.count(1) != len(tasks):
        raise SystemExit("error: some tasks got no result")
    return len(tasks) / elapsed


def pool_scenario(name, rounds, mp_chunk, mul_chunk, n_mp, n_mul):
    import mulproc

    tasks_mp, tasks_mul = make_tasks(n_mp), make_tasks(n_mul)
    ratios, cpu_a, cpu_b = [], [], []
    with mulproc.Pool(WORKERS) as a, multiprocessing.Pool(WORKERS) as b:
        # One small warm-up map each (imports, first pages touched).
        run_map(a, tasks_mp[:2000], mul_chunk)
        run_map(b, tasks_mp[:2000], mp_chunk)
        for _ in range(rounds):
            ra = run_map(a, tasks_mul, mul_chunk, cpu_a)
            rb = run_map(b, tasks_mp, mp_chunk, cpu_b)
            ratios.append(ra / rb)
    shown = "auto" if mul_chunk is None else mul_chunk
    print(f"{name:<14} mulproc.Pool (chunksize={shown}) {ra:>11,.0f}/s   "
          f"multiprocessing.Pool (chunksize={mp_chunk}) {rb:>9,.0f}/s   "
          f"median ratio {statistics.median(ratios):6.1f}x  "
          f"(rounds: {', '.join(f'{r:.1f}' for r in ratios)})", flush=True)

    def cpu(rounds):
        parent = statistics.median(r[0] for r in rounds)
        workers = statistics.median(r[1] for r in rounds)
        return f"{parent + workers:5.1f} us (parent {parent:.1f}, workers {workers:.1f})"

    print(f"{'':<14} CPU per task, median of rounds: mulproc.Pool {cpu(cpu_a)}   "
          f"multiprocessing.Pool {cpu(cpu_b)}", flush=True)


SHIM = (
    "import sys, runpy, mulproc.pymulproc as m; "
    "from mulproc.pymulproc import factory, mpq_protocol; "
    "sys.modules['pymulproc'] = m; sys.modules['pymulproc.factory'] = factory; "
    "sys.modules['pymulproc.mpq_protocol'] = mpq_protocol; "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def pymulproc_run(compat, n):
    script = os.path.join(ROOT, "benches", "pool_pymulproc.py")
    args = ["--workers", str(WORKERS), "--tasks", str(n)]
    cmd = [sys.executable, "-c", SHIM, script, *args] if compat else [sys.executable, script, *args]
    # Its own session, so that a failed run's children (blocked in
    # pymulproc's receive, which has no timeout) are killed with it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        out, err = "", "timed out after 300 s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("tasks_per_sec="):
        which = "mulproc.pymulproc" if compat else "pymulproc"
        raise SystemExit(f"error: the {which} run failed (exit {proc.returncode}):\n{err[-2000:]}")
    return float(lines[-1].split("=", 1)[1])


def script_floor(n=200_000):
    """Tasks/s the parent loop of benches/pool_pymulproc.py reaches with
    send and receive as no-op Python calls (no transport at all): the
    script's own Python per task, which bounds any pymulproc
    implementation under it (the parent is one process)."""
    import importlib.util

    # The script's own checksum and payloads (it imports pymulproc 0.1.2,
    # installed here).
    path = os.path.join(ROOT, "benches", "pool_pymulproc.py")
    spec = importlib.util.spec_from_file_location("pool_pymulproc", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    checksum, payloads = script.checksum, script.make_payloads(n)
    finished, parent_pid = "FINISHED", 1
    messages = [[finished, 2, parent_pid, (i, checksum(i, payloads[i]))] for i in range(n)]

    class End:  # what the parent calls, doing nothing
        def send(self, request, sender_pid=None, recipient_pid=None, data=None):
            return None

        def receive(self, **kwargs):
            return self.message

    tasks = results = End()
    seen = bytearray(n)
    state = {"received": 0}

    def check(message):  # as the script's check()
        if message[0] != finished or message[2] != parent_pid:
            raise SystemExit("floor: unexpected message")
        index, value = message[3]
        if not 0 <= index < n or seen[index]:
            raise SystemExit("floor: twice")
        if value != checksum(index, payloads[index]):
            raise SystemExit("floor: checksum")
        seen[index] = 1
        state["received"] += 1

    def get(block):
        return results.receive(block=block)

    sent = 0
    start = time.perf_counter()
    while state["received"] < n:
        while sent < n and sent - state["received"] < 1024:
            tasks.send("DO", data=payloads[sent])
            sent += 1
        results.message = messages[state["received"]]
        message = get(True)
        if message:
            check(message)
    return n / (time.perf_counter() - start)


def pymulproc_scenario(rounds, n_compat, n_orig):
    ratios, peers = [], []
    for _ in range(rounds):
        ra = pymulproc_run(True, n_compat)
        rb = pymulproc_run(False, n_orig)
        ratios.append(ra / rb)
        peers.append(rb)
    print(f"{'pymulproc':<14} mulproc.pymulproc {ra:>11,.0f}/s   pymulproc 0.1.2 {rb:>9,.0f}/s   "
          f"median ratio {statistics.median(ratios):6.1f}x  "
          f"(rounds: {', '.join(f'{r:.1f}' for r in ratios)})", flush=True)
    floor = script_floor()
    print(f"{'':<14} the script's parent loop alone (send/receive as no-op calls): {floor:,.0f}/s, "
          f"{floor / statistics.median(peers):.1f}x pymulproc's median round: the most any "
          "transport could reach", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="chunksize=1,chunksize=64,auto,pymulproc",
                    help="comma-separated scenarios")
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(f"python {sys.version.split()[0]}, {WORKERS} workers, "
          f"multiprocessing start method {multiprocessing.get_start_method()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    if "chunksize=1" in only:
        pool_scenario("chunksize=1", args.rounds, 1, 1, 20_000, 100_000)
    if "chunksize=64" in only:
        pool_scenario("chunksize=64", args.rounds, 64, 64, 200_000, 400_000)
    if "auto" in only:
        pool_scenario("auto", args.rounds, 1, None, 20_000, 400_000)
    if "pymulproc" in only:
        pymulproc_scenario(args.rounds, 200_000, 10_000)


if __name__ == "__main__":
    ensure_venv()
    main()
