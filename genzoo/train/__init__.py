"""The training engine shared by all families.

``genzoo.train`` is both this package and the API call ``genzoo.train(config)``: importing a
sub-module replaces the ``genzoo.train`` function by the package, so the package is made callable.
"""

import sys
import types
from typing import Any

from genzoo.train.objective import Batch, Objective, OptimizerSpec, StepResult

__all__ = ["Batch", "Objective", "OptimizerSpec", "StepResult"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any):
        """See :func:`genzoo.train.engine.train`."""
        from genzoo.train.engine import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
