"""Multi-fidelity trials: what a reported step costs, and what pruning saves.

(a) The `trial.report_step` round trip. A process worker reports N steps of
one trial and times each call with its own clock:

* byop_nb: `trial.report_step(step, loss=...)` (a request through the call's
  comm; the main process records the step and hands it to the optimizer) on
  `Scheduler.with_processes(1)`, with an `OptunaOptimizer` on an in-memory
  study (the channel's own cost) and on a SQLite study (the step written to
  the database by the main process, as a resumable study does);
* Optuna itself: the worker loads the SQLite study and calls
  `optuna_trial.report(value, step)` on it, as Optuna's own distributed
  optimization does (every worker reaches the storage).

Also `trial.should_prune()` (a round trip answered by a MedianPruner).
Target: report_step at most 1 ms locally (median).

(b) Pruning on a real learner: `SGDClassifier.partial_fit` on scikit-learn's
digits, one epoch per step, validation error reported at each. The same
study (same sampler seed, so the same configurations in the same order) runs
once without a pruner and once with `MedianPruner(n_startup_trials=5,
n_warmup_steps=1)`; each counts the epochs it trained. The space is wide
(`alpha` and `eta0` from tiny to far too large, three losses), as a first
search is: many configurations are bad, and a pruner's saving is there.
One trial runs at a time by default (`--in-flight 1`), so that both studies
see the same configurations and the pruned one's decisions do not depend on
which trial happened to end first: the comparison is the pruner's alone.
With 2 in flight (`--in-flight 2`) a trial is judged against fewer ended ones,
and the saving varies more from seed to seed (measured: ratios 0.32 to 0.54).
Target: the pruned study reaches the same best error on at most half of the
epochs.

    python benchmarks/bench_pruning.py [--steps 200] [--rounds 3] [--trials 40] [--epochs 20] [--seeds 0 1 2]
                                       [--in-flight 1] [--only a|b]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from byop_nb.optimization import OptunaOptimizer, Trial
from byop_nb.scheduling import ExitCode, Scheduler

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- (a) the round trip ------------------------------------------------------------------------


def report_through_comm(trial: Trial, steps: int) -> Trial.Report:
    """Seconds per report_step and per should_prune, medians over `steps`, timed in the worker."""
    reports, questions = [], []
    for step in range(steps):
        began = time.perf_counter()
        trial.report_step(step, loss=1.0 / (step + 1))
        reports.append(time.perf_counter() - began)
        began = time.perf_counter()
        trial.should_prune()
        questions.append(time.perf_counter() - began)
    return trial.success(loss=0.0, report=statistics.median(reports), prune=statistics.median(questions))


def report_to_storage(url: str, study_name: str, trial_id: int, steps: int) -> dict[str, float]:
    """Seconds per `optuna_trial.report` from the worker straight to the SQLite storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=url)
    optuna_trial = optuna.trial.Trial(study, trial_id)
    reports, questions = [], []
    for step in range(steps):
        began = time.perf_counter()
        optuna_trial.report(1.0 / (step + 1), step)
        reports.append(time.perf_counter() - began)
        began = time.perf_counter()
        optuna_trial.should_prune()
        questions.append(time.perf_counter() - began)
    return {"report": statistics.median(reports), "prune": statistics.median(questions)}


def round_trip(steps: int, rounds: int, folder: Path) -> None:
    from byop_nb.scheduling import Task

    pruner = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    scheduler = Scheduler.with_processes(1)
    through_comm = Trial.Task(report_through_comm, scheduler)
    direct = Task(report_to_storage, scheduler)
    results: list[dict[str, float]] = []
    through_comm.on_report(lambda report: results.append(dict(report.results)))
    direct.on_returned(results.append)

    def run(task: Any, *args: Any) -> dict[str, float]:
        scheduler.on_start(lambda: task(*args), name="launch")
        assert scheduler.run(timeout=300) is ExitCode.EXHAUSTED
        scheduler.on_start.remove("launch")
        return results.pop()

    figures: dict[str, list[dict[str, float]]] = {"memory": [], "sqlite": [], "optuna": []}
    for r in range(rounds):
        for kind in ("memory", "sqlite"):
            storage = f"sqlite:///{folder / f'{kind}-{r}.db'}" if kind == "sqlite" else None
            optimizer = OptunaOptimizer(
                {"x": (0.0, 1.0)}, storage=storage, study_name=f"bench-{r}" if storage else None, pruner=pruner
            )
            figures[kind].append(run(through_comm, optimizer.ask(), steps))
        url = f"sqlite:///{folder / f'optuna-{r}.db'}"
        optuna_study = optuna.create_study(study_name="bench", storage=url, pruner=pruner)
        figures["optuna"].append(run(direct, url, "bench", optuna_study.ask()._trial_id, steps))
    names = {
        "memory": "byop_nb report_step, in-memory study",
        "sqlite": "byop_nb report_step, SQLite study (main process writes)",
        "optuna": "worker reports to Optuna's SQLite storage itself",
    }
    medians = {
        kind: {key: statistics.median(f[key] for f in per_round) for key in ("report", "prune")}
        for kind, per_round in figures.items()
    }
    print(f"(a) report_step round trip, median per call over {steps} steps x {rounds} rounds (timed in the worker)")
    for kind, name in names.items():
        m = medians[kind]
        print(f"    {name:58} report {m['report'] * 1e3:7.3f} ms   should_prune {m['prune'] * 1e3:7.3f} ms")
    ours, theirs = medians["memory"], medians["optuna"]
    print(
        f"    optuna-direct / byop_nb (in-memory): report {theirs['report'] / ours['report']:.1f}x, should_prune "
        f"{theirs['prune'] / ours['prune']:.1f}x; optuna-direct / byop_nb (SQLite): report "
        f"{theirs['report'] / medians['sqlite']['report']:.1f}x;  target report_step <= 1 ms: "
        f"{'met' if ours['report'] <= 1e-3 else 'NOT met'}"
    )


# -- (b) pruning on SGDClassifier ---------------------------------------------------------------


def sgd_epochs(trial: Trial, epochs: int) -> Trial.Report:
    """Train an SGDClassifier on digits one epoch (partial_fit) per step; report the validation error."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_valid, y_train, y_valid = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_train)
    x_train, x_valid = scaler.transform(x_train), scaler.transform(x_valid)
    config = trial.config
    model = SGDClassifier(
        loss=config["loss"],
        alpha=config["alpha"],
        learning_rate="constant",
        eta0=config["eta0"],
        random_state=0,
    )
    classes = np.unique(y)
    rng = np.random.default_rng(0)
    error = 1.0
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        error = 1.0 - float(model.score(x_valid, y_valid))
        trial.report_step(epoch, error=error)
        if trial.should_prune():
            return trial.prune(error=error, epochs=epoch + 1)
    return trial.success(error=error, epochs=epochs)


SGD_SPACE = {
    "alpha": (1e-6, 10.0, "log"),
    "eta0": (1e-5, 10.0, "log"),
    "loss": ["hinge", "log_loss", "modified_huber"],
}


def study(n_trials: int, epochs: int, pruning: bool, seed: int, in_flight: int) -> tuple[float, int, int, float]:
    """(best error, epochs trained, trials pruned, seconds) of one study."""
    optimizer = OptunaOptimizer(
        SGD_SPACE,
        metric="error",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if pruning else None,
    )
    scheduler = Scheduler.with_processes(in_flight)
    task = Trial.Task(sgd_epochs, scheduler)
    trained = [0]

    @scheduler.on_start(repeat=in_flight)
    def launch() -> None:
        task(optimizer.ask(), epochs)

    @task.on_report
    def tell_and_ask(report: Trial.Report) -> None:
        trained[0] += int(report.results.get("epochs", 0))
        optimizer.tell(report)
        if task.n_called < n_trials:
            task(optimizer.ask(), epochs)

    began = time.perf_counter()
    assert scheduler.run(timeout=600) is ExitCode.EXHAUSTED
    seconds = time.perf_counter() - began
    pruned = int((task.df()["status"] == "pruned").sum())
    best = optimizer.best_value
    assert best is not None
    return best, trained[0], pruned, seconds


def pruning(n_trials: int, epochs: int, seeds: list[int], in_flight: int) -> None:
    print(
        f"(b) SGDClassifier.partial_fit on digits, {n_trials} trials x {epochs} epochs, {in_flight} in flight, "
        "RandomSampler"
    )
    ratios, same = [], []
    for seed in seeds:
        full = study(n_trials, epochs, pruning=False, seed=seed, in_flight=in_flight)
        pruned = study(n_trials, epochs, pruning=True, seed=seed, in_flight=in_flight)
        ratios.append(pruned[1] / full[1])
        same.append(pruned[0] <= full[0] + 1e-12)
        print(
            f"    seed {seed}: without pruner best error {full[0]:.4f} in {full[1]} epochs ({full[3]:.1f} s); "
            f"MedianPruner best error {pruned[0]:.4f} in {pruned[1]} epochs ({pruned[2]} trials pruned, "
            f"{pruned[3]:.1f} s); epochs ratio {ratios[-1]:.2f}"
        )
    met = all(r <= 0.5 for r in ratios) and all(same)
    print(
        f"    epochs ratio pruned/full: median {statistics.median(ratios):.2f}, max {max(ratios):.2f}; same best in "
        f"{sum(same)}/{len(same)} seeds; target (<= 0.5 and the same best): {'met' if met else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per round of (a)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (a)")
    parser.add_argument("--trials", type=int, default=40, help="trials per study of (b)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per trial of (b)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds of (b)")
    parser.add_argument("--in-flight", type=int, default=1, help="trials running at once in (b)")
    parser.add_argument("--only", choices=["a", "b"], default=None)
    args = parser.parse_args()
    if args.only != "b":
        with tempfile.TemporaryDirectory() as folder:
            round_trip(args.steps, args.rounds, Path(folder))
    if args.only != "a":
        pruning(args.trials, args.epochs, args.seeds, args.in_flight)


if __name__ == "__main__":
    main()
