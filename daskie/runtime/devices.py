"""Which device a task computes on, from its resource tag and what its worker really has.

A task the Plan tags ``GPU`` is placed (by its resource restriction) on a worker that declares
a ``GPU`` resource; there it checks that torch sees a CUDA device, and fails at once with a
message naming the worker when it does not -- a worker that declares a GPU it cannot use is a
cluster set up wrong, and training on its CPU instead would hide that.

The decision is also what the task's objective is built on: :func:`require_device` records it
for the task function that asked (its frame), and :func:`task_device` -- which
:func:`~daskie.runtime.context.objective_for` reads when the run's ``device`` is None -- finds
it while that function is still running, in the same thread. A task that never asked (the
initial parameters, the polish, anything on the client) gets the CPU; a decision cannot leak
into a later task of the same thread, because the frame that made it is gone by then.
"""

from __future__ import annotations

import sys
import threading

from daskie.errors import PlanError, SpecError
from daskie.runtime.state import where

__all__ = ["require_device", "task_device", "check_device", "resolve_device"]

#: Device kinds a run may name.
KINDS = ("cpu", "cuda", "meta")

_claims = threading.local()


def check_device(device, what: str = "device", *, meta: bool = True) -> str | None:
    """``device`` validated: None, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or (with ``meta``)
    ``"meta"`` (shapes without numbers: a dry run of objectives, not of a solve, whose
    optimizers read numbers); a :class:`torch.device` becomes its string.

    Raises
    ------
    SpecError
        Naming ``what`` and the value, for anything else.
    """
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in KINDS or (dev.index is not None and dev.type != "cuda") \
            or (dev.type == "meta" and not meta):
        allowed = ("None, 'cpu', 'cuda', 'cuda:N' or 'meta'" if meta
                   else "None, 'cpu', 'cuda' or 'cuda:N'")
        raise SpecError(f"{what} must be {allowed}, got {device!r}")
    return str(dev)


def require_device(resource: str | None, what: str) -> str:
    """The device of a task tagged ``resource`` (``"cuda"`` or ``"cpu"``), recorded for the
    calling task function (:func:`task_device`).

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
    device = "cpu"
    if resource == "GPU":
        import torch

        if not torch.cuda.is_available():
            raise PlanError(f"{what} is tagged GPU, but torch sees no CUDA device on worker "
                            f"{where()} (torch {torch.__version__}, cuda build: "
                            f"{torch.version.cuda or 'none'}): install a CUDA build of torch on "
                            "the GPU workers, or plan with gpus=0")
        device = "cuda"
    caller = sys._getframe(1)
    _claims.value = (id(caller), caller.f_code, device)
    return device


def task_device() -> str:
    """The device :func:`require_device` decided for the task function running in this thread
    (one of the frames calling this one), else ``"cpu"``."""
    claim = getattr(_claims, "value", None)
    if claim is None:
        return "cpu"
    frame_id, code, device = claim
    frame = sys._getframe(1)
    while frame is not None:
        if id(frame) == frame_id and frame.f_code is code:
            return device
        frame = frame.f_back
    return "cpu"


def resolve_device(device: str | None) -> str:
    """The device a task builds its objective on: the run's ``device`` when it names one
    (checked, :func:`check_device`; ``"cuda"`` on a worker without CUDA is a
    :class:`~daskie.errors.PlanError` naming the worker), else :func:`task_device`."""
    device = check_device(device)
    if device is None:
        return task_device()
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PlanError(f"the run asks for device={device!r}, but torch sees no CUDA device "
                            f"on {where()} (torch {torch.__version__}, cuda build: "
                            f"{torch.version.cuda or 'none'}): install a CUDA build of torch "
                            "there, or run with device=None or 'cpu'")
    return device
