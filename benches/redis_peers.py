#!/usr/bin/env python3
"""RQ and Celery on the same Redis server and the same work as
redis_throughput's end-to-end phase: N tasks of SIZE bytes through WORKERS
worker processes, each task received, "done" (nothing) and acknowledged.
Run by benches/compare_redis.py inside a throwaway venv under target/
(pip install rq celery redis); prints `msgs_per_sec=...` last.

    python redis_peers.py rq     redis://127.0.0.1:6379/0 20000 4 64
    python redis_peers.py celery redis://127.0.0.1:6379/0 20000 4 64

RQ: jobs enqueued in pipelined batches (Queue.enqueue_many), then WORKERS
burst workers (SimpleWorker: no fork per job) drain the queue; the rate is
N over enqueue time plus drain time.

Celery: tasks sent with apply_async (one broker round trip each, the usual
way), WORKERS prefork worker processes, results ignored; each task
increments a Redis counter and the clock stops when it reaches N.
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COUNTER = "mulproc-bench-peers-done"


def rq_task(payload):
    """The RQ job: nothing but receiving its payload."""
    return len(payload)


def run_rq(url, n, workers, size):
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(url)
    q = Queue("mulproc-bench", connection=conn)
    payload = b"x" * size
    t = time.monotonic()
    batch = 500
    for i in range(0, n, batch):
        q.enqueue_many([
            Queue.prepare_data(rq_task, args=(payload,), result_ttl=0)
            for _ in range(min(batch, n - i))
        ])
    env = dict(os.environ, PYTHONPATH=HERE)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", url,
             "--worker-class", "rq.worker.SimpleWorker", "--quiet", "mulproc-bench"],
            env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    for p in procs:
        p.wait()
    dt = time.monotonic() - t
    left = len(q)
    if left:
        raise SystemExit(f"rq: {left} jobs left")
    return n / dt


def celery_app(url):
    from celery import Celery

    app = Celery("redis_peers", broker=url)
    app.conf.task_ignore_result = True
    app.conf.worker_prefetch_multiplier = 64
    app.conf.broker_connection_retry_on_startup = True
    return app


if "celery" in sys.argv[1:2] or os.environ.get("MULPROC_BENCH_CELERY_URL"):
    _url = os.environ.get("MULPROC_BENCH_CELERY_URL") or sys.argv[2]
    app = celery_app(_url)
    _redis = None

    @app.task(name="mulproc_bench_noop")
    def noop(payload):
        global _redis
        if _redis is None:
            from redis import Redis

            _redis = Redis.from_url(_url)
        _redis.incr(COUNTER)


def run_celery(url, n, workers, size):
    from redis import Redis

    conn = Redis.from_url(url)
    conn.delete(COUNTER)
    env = dict(os.environ, PYTHONPATH=HERE, MULPROC_BENCH_CELERY_URL=url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "redis_peers", "worker",
         "--concurrency", str(workers), "--pool", "prefork", "--loglevel", "ERROR",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # let the workers connect before the clock starts
        payload = "x" * size
        t = time.monotonic()
        for _ in range(n):
            noop.apply_async(args=(payload,))
        deadline = time.monotonic() + 600
        while int(conn.get(COUNTER) or 0) < n:
            if time.monotonic() > deadline:
                raise SystemExit("celery: tasks not done in 10 minutes")
            time.sleep(0.01)
        return n / (time.monotonic() - t)
    finally:
        worker.terminate()
        worker.wait()


def main():
    mode, url, n, workers, size = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    rate = {"rq": run_rq, "celery": run_celery}[mode](url, n, workers, size)
    print(f"msgs_per_sec={rate:.0f}")


if __name__ == "__main__":
    main()
