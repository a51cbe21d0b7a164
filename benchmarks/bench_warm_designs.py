"""The two designs of a warm server for limited calls, side by side, per call.

* **forkserver** (what byop_nb uses): `_worker.call(function, Limits(memory=1 GB))`,
  a child of multiprocessing's forkserver that imported what the function imports,
  limited by pynisher (its pipe and process objects, the main-skipping preparation).
* **zygote** (the floor of a server of our own): a fresh interpreter that imported the
  same modules and, on one persistent connection, reads a call (cloudpickle bytes),
  forks, and the child sets RLIMIT_AS, runs the call and writes the result back. No
  pynisher, no multiprocessing: whatever a zygote of our own would add (a parent-death
  signal, the limit's classification, reaping, tracebacks) only adds to it.

Both run the same calls one at a time from this process: a no-op, and the realistic
trial of `bench_real_limits.py` (scikit-learn imported in the body, a random forest
fitted). Rounds alternate the two; printed are the medians (95 % intervals) of the
per-call seconds, and of the per-round ratio forkserver/zygote.

    python benchmarks/bench_warm_designs.py [--calls 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _real_trial import trial  # noqa: E402

ZYGOTE = r"""
import os, pickle, resource, socket, struct, sys
fd = int(sys.argv[1])
sys.path[:] = pickle.loads(bytes.fromhex(sys.argv[2]))
for name in sys.argv[3].split(","):
    __import__(name)
import cloudpickle, gc
gc.collect(); gc.freeze()
conn = socket.socket(fileno=fd)
def read(n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
conn.sendall(b"r")
while True:
    size, = struct.unpack("q", read(8))
    request = read(size)
    pid = os.fork()
    if pid == 0:
        fn, args = cloudpickle.loads(request)
        resource.setrlimit(resource.RLIMIT_AS, (2**30, resource.RLIM_INFINITY))
        out = pickle.dumps(fn(*args))
        conn.sendall(struct.pack("q", len(out)) + out)
        os._exit(0)
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
"""


class Zygote:
    def __init__(self, modules: list[str]) -> None:
        mine, theirs = socket.socketpair()
        self.conn = mine
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(theirs.fileno()), pickle.dumps(sys.path).hex(), ",".join(modules)],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        assert self.conn.recv(1) == b"r"

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        import cloudpickle

        request = cloudpickle.dumps((fn, args))
        self.conn.sendall(struct.pack("q", len(request)) + request)
        (size,) = struct.unpack("q", self._read(8))
        return pickle.loads(self._read(size))

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += self.conn.recv(n - len(data))
        return data

    def close(self) -> None:
        self.conn.close()
        self.process.wait(10)


def noop() -> None:
    return None


def per_call(run, calls: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def main() -> None:
    from _tasks import median_ci

    from byop_nb.scheduling.workers._worker import Limits, call

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    limits = Limits(memory=2**30)
    modules = ["sklearn.datasets", "sklearn.ensemble"]
    zygote = Zygote(modules)
    for fn, fn_args in ((noop, ()), (trial, (0,))):  # warm both: the first calls import and learn
        call(fn, limits, fn_args, {})
        zygote.call(fn, *fn_args)
    print(f"{args.calls} calls per round, one at a time, {args.rounds} rounds; os.getpid()={os.getpid()}")
    for name, fn, fn_args in (("no-op", noop, ()), ("realistic trial", trial, (0,))):
        ours, floor, ratios = [], [], []
        for r in range(args.rounds):
            pair = [
                ("forkserver", lambda: call(fn, limits, fn_args, {})),
                ("zygote", lambda: zygote.call(fn, *fn_args)),
            ]
            if r % 2:
                pair.reverse()
            seconds = {label: per_call(run, args.calls) for label, run in pair}
            ours.append(seconds["forkserver"])
            floor.append(seconds["zygote"])
            ratios.append(seconds["forkserver"] / seconds["zygote"])
        for label, values in (("forkserver (byop_nb)", ours), ("zygote (floor)", floor)):
            m, lo, hi = median_ci(values)
            print(f"  {name:16s} {label:22s} {m * 1000:7.1f} ms per call (95 % CI {lo * 1000:.1f}-{hi * 1000:.1f})")
        m, lo, hi = median_ci(ratios)
        print(f"  {name:16s} forkserver / zygote   {m:7.2f}x (95 % CI {lo:.2f}-{hi:.2f})")
    zygote.close()


if __name__ == "__main__":
    main()
