"""genzoo: GANs, diffusion models and consistency models, trained, sampled, edited and measured
side by side with one API.

    model = genzoo.load("runs/edm")             # a run, checkpoint or converted official model
    images, labels, nfe = genzoo.sample(model, "0-63", sampler="heun", steps=18)
    genzoo.record_of(model)                      # what it is: family, config, where it came from
"""

from __future__ import annotations

from typing import Any

from genzoo.version import __version__  # noqa: F401


def load(*args: Any, **kwargs: Any):
    """See :func:`genzoo.api.load`."""
    from genzoo.api import load as _load

    return _load(*args, **kwargs)


def sample(*args: Any, **kwargs: Any):
    """See :func:`genzoo.api.sample`."""
    from genzoo.api import sample as _sample

    return _sample(*args, **kwargs)


def record_of(model: Any):
    """See :func:`genzoo.checkpoints.record.record_of`: a loaded model's :class:`ModelRecord`."""
    from genzoo.checkpoints.record import record_of as _record_of

    return _record_of(model)


def train(*args: Any, **kwargs: Any):
    """See :func:`genzoo.train.engine.train`."""
    from genzoo.train.engine import train as _train

    return _train(*args, **kwargs)


def evaluate(*args: Any, **kwargs: Any):
    """See :func:`genzoo.metrics.evaluate`."""
    from genzoo.metrics import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


_SUBMODULES = ("api", "checkpoints", "consistency", "data", "demo", "diffusion", "edit", "gan", "io",
               "metrics", "nets", "seeds")


def __getattr__(name: str):
    """Import sub-packages on first use, so ``import genzoo`` stays cheap (``genzoo.edit.inpaint``...)."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'genzoo' has no attribute {name!r}")
