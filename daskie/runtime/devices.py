"""Which device a task computes on, from its resource tag and what its worker really has.

A task the Plan tags ``GPU`` is placed (by its resource restriction) on a worker that declares
a ``GPU`` resource; there it checks that torch sees a CUDA device, and fails at once with a
message naming the worker when it does not -- a worker that declares a GPU it cannot use is a
cluster set up wrong, and training on its CPU instead would hide that.
"""

from __future__ import annotations

from daskie.errors import PlanError
from daskie.runtime.state import where

__all__ = ["require_device"]


def require_device(resource: str | None, what: str) -> str:
    """The device of a task tagged ``resource`` (``"cuda"`` or ``"cpu"``).

    Parameters
    ----------
    resource : str or None
        The task's resource tag (``"GPU"``, ``"CPU"`` or None).
    what : str
        The task, for the message (e.g. ``"window 3 of group 0 (mu)"``).

    Raises
    ------
    PlanError
        A ``GPU`` task on a worker where torch sees no CUDA device.
    """
    if resource != "GPU":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise PlanError(f"{what} is tagged GPU, but torch sees no CUDA device on worker "
                        f"{where()} (torch {torch.__version__}, cuda build: "
                        f"{torch.version.cuda or 'none'}): install a CUDA build of torch on the "
                        "GPU workers, or plan with gpus=0")
    return "cuda"
