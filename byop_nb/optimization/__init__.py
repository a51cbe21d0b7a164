"""Optimization: [`Trial`][byop_nb.optimization.Trial], its reports, and `Trial.Task` to evaluate trials."""

from byop_nb.optimization.optimizers import Optimizer, PruningOptimizer, RandomSearch
from byop_nb.optimization.optuna_optimizer import OptunaOptimizer
from byop_nb.optimization.trial import Trial, TrialTask

__all__ = ["Trial", "TrialTask", "Optimizer", "PruningOptimizer", "RandomSearch", "OptunaOptimizer"]
