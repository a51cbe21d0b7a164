"""One small pruned study, run and checked the same way on every backend (Ray, dask in Slurm jobs)."""

from __future__ import annotations

from typing import Any

from helpers import learn

from byop_nb.scheduling import ExitCode, Scheduler

STEPS = 8  # `learn`'s steps: a complete trial reports 8


def run_and_check_a_pruned_study(scheduler: Scheduler, *, timeout: float, n_trials: int = 8) -> None:
    """Run `learn` trials asked by an Optuna study with a MedianPruner, two at a time, on `scheduler`.

    Checks what every backend must show: some trials pruned and some complete, the pruned ones ran
    fewer steps than the complete ones' 8, and the study holds them PRUNED with an intermediate value
    per reported step.
    """
    import optuna

    from byop_nb.optimization import OptunaOptimizer, Trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimizer = OptunaOptimizer(
        {"x": (0.0, 1.0)},
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    task = Trial.Task(learn, scheduler)

    @scheduler.on_start(repeat=2)
    def launch() -> None:
        task(optimizer.ask())

    @task.on_report
    def tell_and_ask(report: Any) -> None:
        optimizer.tell(report)
        if task.n_called < n_trials:
            task(optimizer.ask())

    assert scheduler.run(timeout=timeout) is ExitCode.EXHAUSTED
    statuses = task.df().set_index("trial")["status"].to_dict()
    pruned = {name for name, status in statuses.items() if status == "pruned"}
    assert len(statuses) == n_trials and pruned and "success" in statuses.values(), statuses
    steps = task.steps_df().groupby("trial").size()
    assert all(steps[name] < STEPS for name in pruned)
    assert all(steps[name] == STEPS for name, status in statuses.items() if status == "success")
    study = {f"trial-{t.number}": t for t in optimizer.study.get_trials(deepcopy=False)}
    assert {name for name, t in study.items() if t.state.name == "PRUNED"} == pruned
    assert all(len(study[name].intermediate_values) == steps[name] for name in statuses)
