"""The training engine shared by all families."""

from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

__all__ = ["Batch", "Objective", "OptimizerSpec", "StepResult"]
