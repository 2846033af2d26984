#!/usr/bin/env python3
"""Worker pool over pymulproc 0.1.2: the Python side of `benches/compare_pymulproc.sh`.

Same shape as mulproc's `examples/worker_pool.rs`: a parent starts W worker
processes, sends T tasks (`REQ_DO`, a 64-byte payload whose first 8 bytes are
the task index, little-endian), each worker sends back `REQ_FINISHED` addressed
to the parent with `(index, checksum)` where checksum = crc32(payload) + index
(mod 2**32), the parent checks every result and that each task got exactly one,
then sends one `REQ_DIE` poison pill per worker and joins them. The clock runs
from the first send to the last result checked.

    python benches/pool_pymulproc.py --workers 4 --tasks 20000

The last stdout line is `tasks_per_sec=<value>`.

Two ways to use pymulproc for this (`--queues`):

* `--queues 2` (default): two `QueueCommunication`s, one for tasks and one for
  results. Everything on the task queue is for any worker and everything on
  the result queue is for the parent, so both sides call
  `receive(block=True)` with no `func`, exactly as the README's 1:N example
  does for the parent. This is the faster way on this machine (about 4x the
  throughput of `--queues 1` and far steadier), so it is the one the
  comparison uses.
* `--queues 1`: one `QueueCommunication` for both directions, each side
  filtering with `receive(func=..., block=True)` as in pymulproc's own
  full-duplex stress test: a worker takes messages addressed to its pid or to
  nobody (tasks, poison pills), the parent takes messages addressed to its
  pid (results). A message the filter rejects is taken off the front and
  `send`-ed again to the back of the queue, so every side keeps pulling and
  re-queueing the other side's messages.

pymulproc's queues are unbounded by default (`max_size=0`), so the parent
could send all T tasks before receiving. It instead keeps at most `--window`
tasks in flight, interleaving sends with receives; that works with a bounded
queue (`--max-size`) too and was no slower here. `--window 0` means no limit.
"""

import argparse
import multiprocessing
import os
import random
import sys
import threading
import time
import zlib

from pymulproc import factory, mpq_protocol

PAYLOAD_LEN = 64
REQUEST = 0  # message = [request, sender_pid, recipient_pid, data]
RECIPIENT = mpq_protocol.R_PID_OFFSET
DATA = mpq_protocol.R_PID_OFFSET + 1


def checksum(index, payload):
    return (zlib.crc32(payload) + index) & 0xFFFFFFFF


def worker(task_factory, result_factory, parent_pid):
    # The peers are built here, in the child: a peer records the pid of the
    # process that builds it and stamps it on every message it sends.
    tasks = task_factory.child()
    results = tasks if result_factory is task_factory else result_factory.child()
    if result_factory is task_factory:
        my_pid = tasks.pid

        def for_me(message):  # as ChildProcess.is_message_for_me in pymulproc's tests
            return message[RECIPIENT] == my_pid or not message[RECIPIENT]

        def get():
            return tasks.receive(func=for_me, block=True)
    else:
        def get():
            return tasks.receive(block=True)

    while True:
        message = get()
        if not message:  # someone else's message, put back at the tail
            continue
        if message[REQUEST] == mpq_protocol.REQ_DIE:
            return
        payload = message[DATA]
        index = int.from_bytes(payload[:8], "little")
        results.send(mpq_protocol.REQ_FINISHED, recipient_pid=parent_pid,
                     data=(index, checksum(index, payload)))


def make_payloads(n, seed=0x6D756C70):
    blob = random.Random(seed).randbytes(56 * n)
    return [i.to_bytes(8, "little") + blob[56 * i:56 * (i + 1)] for i in range(n)]


def watchdog(processes, done):
    """pymulproc's blocking receive has no timeout: fail loudly, not hang, if a worker dies."""
    while not done.wait(0.5):
        for p in processes:
            if p.exitcode is not None and not done.is_set():
                print(f"error: worker {p.pid} exited early with code {p.exitcode}",
                      file=sys.stderr, flush=True)
                os._exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--queues", type=int, choices=(1, 2), default=2,
                    help="1: one queue both ways with receive(func) filtering; "
                         "2: a task queue and a result queue (default, faster)")
    ap.add_argument("--window", type=int, default=1024,
                    help="most tasks in flight at once (0: no limit)")
    ap.add_argument("--max-size", type=int, default=0,
                    help="QueueCommunication max_size (0: unbounded, pymulproc's default)")
    args = ap.parse_args()
    if args.workers < 1 or args.tasks < 1 or args.window < 0 or args.max_size < 0:
        ap.error("--workers and --tasks must be >= 1, --window and --max-size >= 0")

    n, window = args.tasks, args.window or args.tasks
    payloads = make_payloads(n)

    task_factory = factory.QueueCommunication(max_size=args.max_size)
    result_factory = (task_factory if args.queues == 1
                      else factory.QueueCommunication(max_size=args.max_size))
    tasks = task_factory.parent()
    results = tasks if args.queues == 1 else result_factory.parent()
    parent_pid = tasks.pid

    processes = [multiprocessing.Process(name=f"worker_{i}", target=worker,
                                         args=(task_factory, result_factory, parent_pid))
                 for i in range(args.workers)]
    for p in processes:
        p.start()
    done = threading.Event()
    threading.Thread(target=watchdog, args=(processes, done), daemon=True).start()

    if args.queues == 1:
        def for_parent(message):  # as in pymulproc's full-duplex test
            return message[RECIPIENT] == parent_pid

        def get(block):
            return results.receive(func=for_parent, block=block)
    else:
        def get(block):
            return results.receive(block=block)

    seen = bytearray(n)
    sent = received = 0

    def check(message):
        nonlocal received
        if message[REQUEST] != mpq_protocol.REQ_FINISHED or message[RECIPIENT] != parent_pid:
            raise SystemExit(f"error: unexpected message {message!r}")
        index, value = message[DATA]
        if not 0 <= index < n or seen[index]:
            raise SystemExit(f"error: task {index} answered twice or out of range")
        if value != checksum(index, payloads[index]):
            raise SystemExit(f"error: task {index} has a wrong checksum")
        seen[index] = 1
        received += 1

    start = time.perf_counter()
    while received < n:
        while sent < n and sent - received < window:
            tasks.send(mpq_protocol.REQ_DO, data=payloads[sent])
            sent += 1
        message = get(True)
        if message:
            check(message)
        # Take whatever else is already there before sending more.
        while received < n:
            message = get(False)
            if not message:  # empty (or, with one queue, a task put back)
                break
            check(message)
    elapsed = time.perf_counter() - start

    if seen.count(1) != n:
        raise SystemExit("error: some tasks got no result")
    # The watchdog is for deaths during the run: stop it before the poison
    # pills, or it may see a worker that exited after its pill as early.
    done.set()
    for _ in processes:
        tasks.send(mpq_protocol.REQ_DIE)
    for p in processes:
        p.join()
    for p in processes:
        if p.exitcode != 0:
            raise SystemExit(f"error: worker {p.pid} exited with code {p.exitcode}")
    # Every message put was taken (receive() calls task_done()): both queues are drained.
    tasks.queue_join()
    results.queue_join()

    print(f"pymulproc pool: workers={args.workers} tasks={n} queues={args.queues} "
          f"window={args.window} elapsed={elapsed:.3f}s")
    print(f"tasks_per_sec={n / elapsed:.1f}")


if __name__ == "__main__":
    main()
