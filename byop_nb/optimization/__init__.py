"""Optimization: [`Trial`][byop_nb.optimization.Trial], its reports, `Trial.Task` to evaluate trials, and optimizers.

[`RandomSearch`][byop_nb.optimization.RandomSearch] and
[`OptunaOptimizer`][byop_nb.optimization.OptunaOptimizer] follow the
[`Optimizer`][byop_nb.optimization.Optimizer] protocol: `ask()` a trial,
`tell(report)` its report. Optuna is imported only when an `OptunaOptimizer` is made.
"""

from byop_nb.optimization.optimizers import Optimizer, OptunaOptimizer, RandomSearch
from byop_nb.optimization.trial import Trial, TrialTask

__all__ = ["Trial", "TrialTask", "Optimizer", "RandomSearch", "OptunaOptimizer"]
