"""Limited calls on a realistic trial: scikit-learn imported inside the function, a random forest fitted.

Each variant runs TRIALS calls of `_real_trial.trial` (or the same body defined in this
script's `__main__`, which travels by value) on `Scheduler.with_processes(2)`, two in
flight, in an interpreter of its own, timed from before the scheduler is made to the end
of its run (worker start and imports included, as a researcher meets them):

* **byop_nb** with no limit, and with `memory_limit=(1, "GB")`, `cpu_time_limit=60`,
  `wall_time_limit=60`;
* **amltk** (where it is importable) with no limit and with its pynisher plugin's
  memory limit;
* each with scikit-learn imported in the parent before the run (amltk's fork-started
  workers then inherit it) and without;
* byop_nb's memory limit with a 500 MB parent (a bytearray touched before the run).

Rounds run the variants in a shuffled order (seeded). Printed: each variant's median
seconds with a bootstrap 95 % interval, and the per-round ratios that the targets name
(a limited run's time over the unlimited run's of the same project and parent; byop_nb's
limited run against amltk's), with their intervals.

Targets (issue 21): byop_nb limited <= 1.2x byop_nb unlimited; byop_nb limited at least
as fast as amltk limited (amltk/byop_nb >= 1.0).

    python benchmarks/bench_real_limits.py [--rounds 3] [--trials 24] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

TRIALS = 24
WORKERS = 2
LIMITS = {
    "none": {},
    "memory": {"memory_limit": (1, "GB")},
    "cpu": {"cpu_time_limit": 60},
    "wall": {"wall_time_limit": 60},
}


def trial(seed: int) -> float:
    """`_real_trial.trial`, defined in `__main__`: it travels to the workers by value."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_digits(return_X_y=True)
    model = RandomForestClassifier(n_estimators=10, random_state=seed).fit(x[:1200], y[:1200])
    return float(model.score(x[1200:], y[1200:]))


def run_byop(limit: str, where: str, trials: int) -> float:
    from byop_nb.scheduling import Scheduler, Task

    if where == "module":
        from _real_trial import trial as function
    else:
        function = trial
    start = time.perf_counter()
    scheduler = Scheduler.with_processes(WORKERS)
    task = Task(function, scheduler, **LIMITS[limit])  # type: ignore[arg-type]
    seeds = iter(range(trials))

    @scheduler.on_start(repeat=WORKERS)
    @task.on_done
    def launch() -> None:
        seed = next(seeds, None)
        if seed is not None:
            task(seed)

    scheduler.run()
    elapsed = time.perf_counter() - start
    df = task.df()
    bad = df[df["status"] != "returned"]
    assert len(df) == trials and bad.empty, bad["traceback"].tolist()[:1]
    return elapsed


def run_amltk(limit: str, trials: int) -> float:
    from _real_trial import trial as function  # amltk pickles by reference
    from amltk.scheduling import Scheduler as AScheduler
    from amltk.scheduling.plugins.pynisher import PynisherPlugin

    start = time.perf_counter()
    scheduler = AScheduler.with_processes(WORKERS)
    plugins = [PynisherPlugin(memory_limit=(1, "GB"))] if limit == "memory" else []
    task = scheduler.task(function, plugins=plugins)
    seeds = iter(range(trials))
    results: list[float] = []

    @scheduler.on_start(repeat=WORKERS)
    def launch() -> None:
        task.submit(next(seeds))

    @task.on_result
    def again(_future: object, result: float) -> None:
        results.append(result)
        seed = next(seeds, None)
        if seed is not None:
            task.submit(seed)

    scheduler.run(display=False)
    elapsed = time.perf_counter() - start
    assert len(results) == trials, f"amltk ran {len(results)} of {trials} trials"
    return elapsed


def one(variant: dict) -> float:
    """Run one variant in this interpreter; its seconds."""
    if variant["parent"]:
        import sklearn.datasets  # noqa: F401
        import sklearn.ensemble  # noqa: F401
    ballast = None
    if variant.get("big"):
        ballast = bytearray(variant["big"] * 2**20)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
    if variant["project"] == "amltk":
        seconds = run_amltk(variant["limit"], variant["trials"])
    else:
        seconds = run_byop(variant["limit"], variant["where"], variant["trials"])
    del ballast
    return seconds


def amltk_available() -> bool:
    try:
        import amltk.scheduling  # noqa: F401
    except ImportError:
        return False
    return True


def variants(trials: int, quick: bool) -> dict[str, dict]:
    found: dict[str, dict] = {}
    parents = [False] if quick else [False, True]
    for parent in parents:
        p = "parent-sklearn" if parent else "fresh-parent"
        for limit in LIMITS if not quick else ["none", "memory"]:
            found[f"byop {limit} {p}"] = dict(project="byop", limit=limit, parent=parent, where="module")
        if amltk_available():
            for limit in ("none", "memory"):
                found[f"amltk {limit} {p}"] = dict(project="amltk", limit=limit, parent=parent)
    if not quick:
        found["byop memory by-value fresh-parent"] = dict(project="byop", limit="memory", parent=False, where="value")
        found["byop none by-value fresh-parent"] = dict(project="byop", limit="none", parent=False, where="value")
        found["byop none 500MB-parent"] = dict(project="byop", limit="none", parent=False, where="module", big=500)
        found["byop memory 500MB-parent"] = dict(project="byop", limit="memory", parent=False, where="module", big=500)
    for variant in found.values():
        variant["trials"] = trials
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--quick", action="store_true", help="fresh parent, no limit and memory only")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"seconds": one(json.loads(args.one))}))
        return

    from _tasks import median_ci

    table = variants(args.trials, args.quick)
    times: dict[str, list[float]] = {name: [] for name in table}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = list(table)
        rng.shuffle(order)
        for name in order:
            out = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(table[name])],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                print(f"{name}: FAILED\n{out.stderr[-2000:]}", file=sys.stderr)
                times[name].append(float("nan"))
                continue
            times[name].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"\n{args.trials} trials on {WORKERS} process workers, {args.rounds} rounds; seconds per run:")
    for name, values in times.items():
        m, lo, hi = median_ci(values)
        print(f"  {name:40s} {m:6.2f} s  (95 % CI {lo:.2f}-{hi:.2f})")

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(times[a], times[b], strict=True)]

    print("\nratios (per round, then median with 95 % CI):")
    for name in table:
        project, limit, *rest = name.split(" ")
        if limit == "none":
            continue
        base = " ".join([project, "none", *rest])
        if base in times:
            m, lo, hi = median_ci(ratios(name, base))
            mark = "ok" if hi <= 1.2 else ("MISSED" if lo > 1.2 else "not resolved")
            print(f"  {name} / {base}: {m:.3f} ({lo:.3f}-{hi:.3f})  target <= 1.2: {mark}")
        if project == "byop" and limit == "memory":
            amltk = " ".join(["amltk", "memory", *rest])
            if amltk in times:
                m, lo, hi = median_ci(ratios(amltk, name))
                mark = "ok" if lo >= 1.0 else ("MISSED" if hi < 1.0 else "not resolved")
                print(f"  speed vs amltk ({amltk} / {name}): {m:.3f} ({lo:.3f}-{hi:.3f})  target >= 1.0: {mark}")


if __name__ == "__main__":
    main()
