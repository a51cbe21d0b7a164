"""Optimizer loop overhead: OptunaOptimizer + Trial.Task against Optuna's own `study.optimize(n_jobs=2)`.

Both run N trials of the same no-op objective (one float parameter, loss 0)
on a fresh in-memory study with the same sampler:

* byop_nb: `OptunaOptimizer` asks, a `Trial.Task` evaluates on
  `Scheduler.with_processes(2)`, the guide's pattern (ask once per worker on
  start, tell and ask again on each report), so 2 trials in flight; the clock
  covers the whole `scheduler.run()`, pool start included;
* Optuna: `study.optimize(objective, n_trials=N, n_jobs=2)` (2 threads).

Rounds alternate between the two so machine noise hits both; the figure that
counts is the median of the per-round ratios (byop_nb trials/s over Optuna's).
With TPE the sampler's own cost (it grows with the number of trials) is in
both; the random sampler leaves mostly the loop's cost.

    python benchmarks/bench_optuna.py [--n 300] [--rounds 5] [--sampler both|random|tpe]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import optuna
from optuna.distributions import FloatDistribution

from byop_nb.optimization import OptunaOptimizer, Trial
from byop_nb.scheduling import Scheduler

WORKERS = 2
SPACE = {"x": FloatDistribution(-5.0, 5.0)}


def noop(trial: Trial) -> Trial.Report:
    return trial.success(loss=0.0)


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed) if kind == "random" else optuna.samplers.TPESampler(seed=seed)


def through_byop(n: int, sampler: str, seed: int) -> float:
    """Trials per second: OptunaOptimizer + Trial.Task on 2 process workers."""
    optimizer = OptunaOptimizer(SPACE, sampler=make_sampler(sampler, seed))
    scheduler = Scheduler.with_processes(WORKERS)
    task = Trial.Task(noop, scheduler)

    @scheduler.on_start(repeat=WORKERS)
    def launch() -> None:
        task(optimizer.ask())

    @task.on_report
    def tell_and_ask(report: Trial.Report) -> None:
        optimizer.tell(report)
        if task.n_called < n:
            task(optimizer.ask())

    start = time.perf_counter()
    scheduler.run()
    elapsed = time.perf_counter() - start
    assert optimizer.n_told == n and len(optimizer.study.trials) == n
    return n / elapsed


def through_optuna(n: int, sampler: str, seed: int) -> float:
    """Trials per second: Optuna's study.optimize(n_jobs=2) on the same objective."""
    study = optuna.create_study(sampler=make_sampler(sampler, seed))

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", -5.0, 5.0)
        return 0.0

    start = time.perf_counter()
    study.optimize(objective, n_trials=n, n_jobs=WORKERS)
    elapsed = time.perf_counter() - start
    assert len(study.trials) == n
    return n / elapsed


def compare(n: int, rounds: int, sampler: str) -> float:
    through_byop(20, sampler, 0), through_optuna(20, sampler, 0)  # warm imports and caches
    ratios = []
    for i in range(rounds):
        if i % 2 == 0:
            ours, theirs = through_byop(n, sampler, i), through_optuna(n, sampler, i)
        else:
            theirs, ours = through_optuna(n, sampler, i), through_byop(n, sampler, i)
        ratios.append(ours / theirs)
        print(
            f"{sampler:6} round {i + 1}: byop_nb {ours:7.0f} trials/s  optuna n_jobs={WORKERS} {theirs:7.0f} "
            f"trials/s  ratio {ours / theirs:.3f}",
            flush=True,
        )
    median = statistics.median(ratios)
    print(f"{sampler:6} median ratio byop_nb/optuna: {median:.3f}  (n={n}, rounds={rounds}, workers={WORKERS})")
    return median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sampler", choices=["both", "random", "tpe"], default="both")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, Any] = {}
    for kind in ["random", "tpe"] if args.sampler == "both" else [args.sampler]:
        results[kind] = compare(args.n, args.rounds, kind)
