#!/usr/bin/env python3
"""mulproc-redis against Redis itself: the RedisQueue's rate as a ratio of
redis-benchmark's pipelined XADD rate for the same payload size.

Starts a throwaway redis-server (no persistence) on a free port of
127.0.0.1, in a directory under target/compare_redis/, and stops it at the
end, also on failure. Then, for `--rounds` rounds (default 5), runs in
turn, interleaved (so a noisy minute on a shared machine hits both sides):

  A  redis-benchmark -P <pipeline> XADD <stream> * d <payload>   (requests/s)
  B  target/release/examples/redis_throughput URL N WORKERS SIZE
       send_msgs_per_sec: the producer alone, try_send_batch of 256
       msgs_per_sec:      producer + WORKERS worker processes, received in
                          batches and acknowledged, clock stopped when
                          every task is acknowledged

  C  target/release/examples/pool_throughput URL N WORKERS SIZE
       the worker pool (mulproc::pool over RedisBackend) with WORKERS
       local workers, then with WORKERS remote workers (--remote: a named
       pool with no local worker, joined by WORKERS separate processes
       with Builder::serve), then over shared memory for scale
       (tasks_per_sec, every result checked)

and reports the median over rounds of B/A for each of B's two figures,
against the target of 0.5. The end-to-end figure does three times the
server work of a bare XADD per message (add, read, acknowledge), so it is
the harder of the two.

With --peers it also runs RQ and Celery on the same server and work
(benches/redis_peers.py: --peer-n tasks of the same size through the same
number of worker processes) in a throwaway venv under target/ that it
makes (pip install rq celery redis packaging), and reports the end-to-end
rate's median ratio to each.

Writes target/compare_redis/results.json (every run) and table.md.

    python3 benches/compare_redis.py                  # build, 5 rounds
    python3 benches/compare_redis.py --rounds 3 -n 100000 --no-build
    python3 benches/compare_redis.py --peers          # and RQ, Celery

Standard library only. Needs redis-server and redis-benchmark on PATH
(Debian: apt-get install -y redis-server redis-tools).
"""

import argparse
import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "compare_redis")
BIN = os.path.join(ROOT, "target", "release", "examples", "redis_throughput")
POOL_BIN = os.path.join(ROOT, "target", "release", "examples", "pool_throughput")
VENV = os.path.join(ROOT, "target", "venv-redis-peers")
PEERS = os.path.join(ROOT, "benches", "redis_peers.py")
TARGET = 0.5


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """A redis-server on a free port, killed on exit."""

    def __init__(self, directory):
        self.dir = directory
        self.proc = None
        for _ in range(10):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [shutil.which("redis-server") or "redis-server",
                 "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", directory, "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--protected-mode", "no",
                 "--logfile", ""],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            log = []
            for line in self.proc.stdout:
                log.append(line)
                if "Ready to accept connections" in line:
                    return
            self.proc.wait()
        raise SystemExit("could not start redis-server:\n" + "".join(log))

    def url(self):
        return f"redis://127.0.0.1:{self.port}/"

    def cli(self, *args):
        subprocess.run(["redis-cli", "-p", str(self.port), *args],
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def xadd_rate(server, n, size, pipeline):
    payload = "x" * size
    out = subprocess.run(
        ["redis-benchmark", "-p", str(server.port), "-n", str(n),
         "-P", str(pipeline), "--csv",
         "XADD", "mulproc-bench-xadd", "*", "d", payload],
        check=True, capture_output=True, text=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    rate = float(rows[-1][1])
    server.cli("DEL", "mulproc-bench-xadd")
    return rate


def ours(server, n, workers, size):
    out = subprocess.run([BIN, server.url(), str(n), str(workers), str(size)],
                         check=True, capture_output=True, text=True).stdout
    last = out.strip().splitlines()[-1]
    return {k: float(v) for k, v in (kv.split("=") for kv in last.split())}


def pool_rate(url, n, workers, size, remote=False):
    args = [POOL_BIN, url, str(n), str(workers), str(size)] + (["--remote"] if remote else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1].split("=")[1])


def peer_python():
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "rq", "celery", "redis", "packaging"],
                   check=True)
    return py


def peer(py, server, mode, n, workers, size):
    server.cli("FLUSHALL")
    out = subprocess.run([py, PEERS, mode, server.url() + "0", str(n), str(workers), str(size)],
                         check=True, capture_output=True, text=True, cwd=os.path.dirname(PEERS)).stdout
    return float(out.strip().splitlines()[-1].split("=")[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=200_000, help="messages per run")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="payload bytes")
    ap.add_argument("--pipeline", type=int, default=64,
                    help="redis-benchmark -P (requests per pipeline)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--peers", action="store_true", help="also RQ and Celery")
    ap.add_argument("--peer-n", type=int, default=5000, help="tasks per peer run")
    ap.add_argument("--pool-n", type=int, default=50_000, help="tasks per pool run")
    a = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y redis-server redis-tools")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "mulproc-redis",
                        "--example", "redis_throughput", "--example", "pool_throughput"],
                       cwd=ROOT, check=True)
    py = peer_python() if a.peers else None
    os.makedirs(OUT, exist_ok=True)
    tmp = os.path.join(OUT, f"server-{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    server = Server(tmp)
    runs = []
    try:
        for r in range(a.rounds):
            x = xadd_rate(server, a.n, a.size, a.pipeline)
            o = ours(server, a.n, a.workers, a.size)
            run = {"round": r, "xadd_per_sec": x, **o}
            run["pool_local_per_sec"] = pool_rate(server.url(), a.pool_n, a.workers, a.size)
            run["pool_remote_per_sec"] = pool_rate(
                server.url() + f"0/bench-{os.getpid()}-{r}", a.pool_n, a.workers, a.size, remote=True)
            run["pool_shm_per_sec"] = pool_rate("shm", a.pool_n * 4, a.workers, a.size)
            if py:
                run["rq_per_sec"] = peer(py, server, "rq", a.peer_n, a.workers, a.size)
                run["celery_per_sec"] = peer(py, server, "celery", a.peer_n, a.workers, a.size)
            runs.append(run)
            print(f"round {r}: XADD -P{a.pipeline} {x:,.0f}/s, "
                  f"send {o['send_msgs_per_sec']:,.0f}/s, "
                  f"end to end {o['msgs_per_sec']:,.0f}/s, "
                  f"pool {run['pool_local_per_sec']:,.0f}/s local, "
                  f"{run['pool_remote_per_sec']:,.0f}/s remote, "
                  f"{run['pool_shm_per_sec']:,.0f}/s shm"
                  + (f", RQ {run['rq_per_sec']:,.0f}/s, Celery {run['celery_per_sec']:,.0f}/s"
                     if py else ""), flush=True)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(key):
        return statistics.median(r[key] / r["xadd_per_sec"] for r in runs)

    rows = [
        ("send (producer alone, batches of 256)", "send_msgs_per_sec"),
        (f"end to end ({a.workers} workers, received and acknowledged)", "msgs_per_sec"),
    ]
    lines = [
        f"RedisQueue vs redis-benchmark XADD -P {a.pipeline}, {a.size}-byte payloads, "
        f"{a.n} messages, {a.rounds} interleaved rounds (median ratio)",
        "",
        "| figure | median msg/s | median XADD/s | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    xm = statistics.median(r["xadd_per_sec"] for r in runs)
    for label, key in rows:
        ratio = med(key)
        m = statistics.median(r[key] for r in runs)
        lines.append(f"| {label} | {m:,.0f} | {xm:,.0f} | {ratio:.2f} | >= {TARGET} | "
                     f"{'yes' if ratio >= TARGET else 'no'} |")
    def ratio_of(a_key, b_key):
        return statistics.median(r[a_key] / r[b_key] for r in runs)

    lines += [
        "",
        f"Worker pool (mulproc::pool), {a.workers} workers, {a.pool_n} tasks of {a.size} bytes",
        "",
        "| pool | median tasks/s | median ratio |",
        "| --- | --- | --- |",
        f"| over Redis, local workers | {statistics.median(r['pool_local_per_sec'] for r in runs):,.0f} | 1 |",
        f"| over Redis, remote workers (Builder::serve) | "
        f"{statistics.median(r['pool_remote_per_sec'] for r in runs):,.0f} | "
        f"{ratio_of('pool_remote_per_sec', 'pool_local_per_sec'):.2f} x local |",
        f"| shared memory, for scale | {statistics.median(r['pool_shm_per_sec'] for r in runs):,.0f} | "
        f"{ratio_of('pool_shm_per_sec', 'pool_local_per_sec'):.1f} x Redis |",
    ]
    if py:
        lines += ["", "| pool over Redis (local workers) against | its median tasks/s | median ratio | target |",
                  "| --- | --- | --- | --- |"]
        for label, key, target in (("RQ (SimpleWorker, burst)", "rq_per_sec", 10),
                                   ("Celery (prefork, redis broker)", "celery_per_sec", 5)):
            m = statistics.median(r[key] for r in runs)
            lines.append(f"| {label} | {m:,.0f} | {ratio_of('pool_local_per_sec', key):,.0f}x | >= {target}x |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "table.md"), "w") as f:
        f.write(table)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"args": vars(a), "runs": runs}, f, indent=1)
    print()
    print(table)


if __name__ == "__main__":
    sys.exit(main())
