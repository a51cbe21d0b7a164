"""Comm throughput: messages per second from a 2-process pool to the main process.

Two workers of `Scheduler.with_processes(2)` each send N small messages through
their Comm (`comm.send((i, 0.5))`); every message is emitted as MESSAGE in the
main process and counted by a callback. The baseline, measured in the same run,
is the bare minimum: two forked processes each sending the same messages
through a `multiprocessing.Pipe`, read by the main process with
`multiprocessing.connection.wait` (no events, no scheduler). Rounds alternate
between the two; the figures are medians over the rounds.

Also measured: request round trips per second (`comm.request(i)` answered by
an `on_request` callback) from one worker, against a duplex Pipe echo.

    python benchmarks/bench_comms.py [--n 100000] [--requests 5000] [--rounds 5] [--tcp]

With `--tcp` the Comms go through TCP on 127.0.0.1 instead of the Unix socket:
the path of dask workers on other machines, here without the network's latency.

Throughput is counted from the first message received to the last, so pool
start-up is not in it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection, wait

from byop_nb.scheduling import Comm, CommTask, Scheduler
from byop_nb.scheduling import comms as comms_module

WORKERS = 2


# -- worker side -----------------------------------------------------------------------
def send_many(comm: Comm, n: int) -> int:
    for i in range(n):
        comm.send((i, 0.5))
    return n


def ask_many(comm: Comm, n: int) -> int:
    total = 0
    for i in range(n):
        total += comm.request(i)
    return total


def pipe_send_many(conn: Connection, n: int) -> None:
    for i in range(n):
        conn.send((i, 0.5))
    conn.close()


def pipe_ask_many(conn: Connection, n: int) -> None:
    for i in range(n):
        conn.send(i)
        conn.recv()
    conn.close()


# -- main side -------------------------------------------------------------------------
def comm_messages(n: int) -> float:
    """Messages per second through Comms from WORKERS process workers."""
    scheduler = Scheduler.with_processes(WORKERS)
    task = CommTask(send_many, scheduler)
    first: list[float] = []
    last = [0.0]
    count = [0]

    @scheduler.on_start
    def launch() -> None:
        for _ in range(WORKERS):
            task(n)

    @task.on_message
    def received(msg: Comm.Msg) -> None:
        if not first:
            first.append(time.perf_counter())
        count[0] += 1
        last[0] = time.perf_counter()

    scheduler.run()
    assert count[0] == WORKERS * n, count[0]
    return count[0] / (last[0] - first[0])


def pipe_messages(n: int) -> float:
    """Messages per second through bare Pipes from WORKERS forked processes."""
    context = multiprocessing.get_context("fork")
    readers, processes = [], []
    for _ in range(WORKERS):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=pipe_send_many, args=(writer, n))
        process.start()
        writer.close()
        readers.append(reader)
        processes.append(process)
    count, first, last = 0, 0.0, 0.0
    while readers:
        for reader in wait(readers):
            try:
                reader.recv()
            except EOFError:
                readers.remove(reader)
                continue
            if not count:
                first = time.perf_counter()
            count += 1
            last = time.perf_counter()
    for process in processes:
        process.join()
    assert count == WORKERS * n, count
    return count / (last - first)


def comm_requests(n: int) -> float:
    """Request round trips per second from one process worker."""
    scheduler = Scheduler.with_processes(1)
    task = CommTask(ask_many, scheduler)
    first: list[float] = []
    last = [0.0]

    @scheduler.on_start
    def launch() -> None:
        task(n)

    @task.on_request
    def answer(msg: Comm.Msg) -> None:
        if not first:
            first.append(time.perf_counter())
        last[0] = time.perf_counter()
        msg.respond(1)

    results: list[int] = []
    task.on_returned(results.append)
    scheduler.run()
    assert results == [n], results
    return (n - 1) / (last[0] - first[0])


def pipe_requests(n: int) -> float:
    """Round trips per second through a duplex Pipe to one forked process."""
    context = multiprocessing.get_context("fork")
    here, there = context.Pipe(duplex=True)
    process = context.Process(target=pipe_ask_many, args=(there, n))
    process.start()
    there.close()
    first = last = 0.0
    for i in range(n):
        here.recv()
        if i == 0:
            first = time.perf_counter()
        last = time.perf_counter()
        here.send(1)
    process.join()
    return (n - 1) / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages per worker")
    parser.add_argument("--requests", type=int, default=5_000, help="request round trips")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tcp", action="store_true", help="Comms over TCP on 127.0.0.1, not the Unix socket")
    args = parser.parse_args()
    if args.tcp:
        hub = comms_module._Hub
        comms_module._Hub = lambda *a, **k: hub(*a, **{**k, "tcp_host": "127.0.0.1", "unix": False})

    rows: dict[str, list[float]] = {"comm": [], "pipe": [], "comm_req": [], "pipe_req": []}
    for _ in range(args.rounds):
        rows["comm"].append(comm_messages(args.n))
        rows["pipe"].append(pipe_messages(args.n))
        rows["comm_req"].append(comm_requests(args.requests))
        rows["pipe_req"].append(pipe_requests(args.requests))
    median = {key: statistics.median(values) for key, values in rows.items()}
    ratio = statistics.median(c / p for c, p in zip(rows["comm"], rows["pipe"]))
    ratio_req = statistics.median(c / p for c, p in zip(rows["comm_req"], rows["pipe_req"]))
    print(f"Comms over {'TCP on 127.0.0.1' if args.tcp else 'a Unix socket'}")
    print(f"messages from {WORKERS} process workers, {args.n} each, median of {args.rounds} rounds:")
    print(f"  Comm -> MESSAGE events : {median['comm']:>12,.0f} messages/s")
    print(f"  bare multiprocessing.Pipe: {median['pipe']:>10,.0f} messages/s")
    print(f"  ratio Comm / Pipe        : {ratio:>10.2f}")
    print(f"request round trips from 1 process worker, {args.requests} requests:")
    print(f"  Comm request -> respond : {median['comm_req']:>11,.0f} round trips/s")
    print(f"  bare duplex Pipe echo    : {median['pipe_req']:>10,.0f} round trips/s")
    print(f"  ratio Comm / Pipe        : {ratio_req:>10.2f}")


if __name__ == "__main__":
    main()
