"""Checks of a problem's data where it is used.

The data callables (``f``, ``alpha``, ``exact``, the kernels) are user code evaluated at the
points a discretization chooses. A problem is checked at construction on a few hundred points,
but only the points a formulation (or the reference solver) actually evaluates prove that
the data are usable there: an ``f`` that is NaN on a small part of the domain, or a kernel
that is complex, must fail with an error naming the field, before training starts, never as
"loss became nan" later, and never by silently dropping an imaginary part.

:func:`evaluate` calls one data callable and checks what it returns; :func:`check_values`
checks values computed elsewhere; :meth:`daskie.problems.Problem.check_values` runs both over
every data field of a problem at given points and quadrature nodes.
"""

from __future__ import annotations

import math

import numpy as np

from daskie.errors import SpecError

__all__ = ["check_values", "evaluate", "probe_nonlinearity"]


def check_values(values, shape: tuple, field: str) -> np.ndarray:
    """Check data values and return them as a float64 array of ``shape``.

    Parameters
    ----------
    values : array-like
        What a data callable returned. A scalar is refused unless ``shape`` is ``()``: the
        data are used as arrays of one value per point, and numpy's failure on a scalar
        deep inside a formulation names no field.
    shape : tuple of int
        The shape the values must have (one value per point, or per point and node).
    field : str
        The field's name for the message, e.g. ``"f"`` or ``"terms[0].kernel"``.

    Returns
    -------
    numpy.ndarray
        float64 values of ``shape``.

    Raises
    ------
    SpecError
        Naming ``field``: non-numeric values (strings, objects), complex values (daskie solves
        real equations; a zero imaginary part is refused as well, since numpy would drop a
        non-zero one silently), a scalar or another wrong shape (with the shape expected),
        or NaN / infinite values (with how many and the first point's index).
    """
    shape = tuple(int(s) for s in shape)
    try:
        arr = np.asarray(values)
    except Exception as exc:  # noqa: BLE001 - whatever the user's object raises
        raise SpecError(f"{field} returned something that is not an array of numbers "
                        f"({type(values).__name__}: {exc})") from exc
    kind = arr.dtype.kind
    if kind == "c":
        raise SpecError(f"{field} returned complex values (dtype {arr.dtype}); daskie solves "
                        f"real equations: return real values (e.g. split a complex equation "
                        f"into its real and imaginary parts)")
    if kind not in "biuf":
        if kind == "O":  # a list of numbers and other things: try, but name the field on failure
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise SpecError(f"{field} returned non-numeric values (objects such as "
                                f"{type(arr.flat[0]).__name__ if arr.size else 'none'}); "
                                f"return an array of real numbers") from None
        else:
            raise SpecError(f"{field} returned non-numeric values (dtype {arr.dtype}); return "
                            f"an array of real numbers")
    arr = arr.astype(np.float64, copy=False)
    if arr.shape == () and shape != ():
        kernel = "kernel" in field
        constant = ("return c + 0 * (x[..., 0] + t[..., 0])" if kernel
                    else "give alpha=c (a number)" if field == "alpha"
                    else "return np.full(x.shape[:-1], c)")
        raise SpecError(
            f"{field} returned a scalar ({type(values).__name__}) but must return one value per "
            f"{'pair (x, t)' if kernel else 'point'}: expected shape {shape} (callables take "
            f"arrays of shape (..., d) and return shape (...)); for a constant c {constant}")
    if arr.shape != shape:
        raise SpecError(
            f"{field} must return one value per point: expected shape {shape}, got {arr.shape} "
            "(callables take arrays of shape (..., d) and return shape (...))")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), shape) if shape else ()
        raise SpecError(f"{field} is not finite on the domain: NaN or inf at {int(bad.sum())} "
                        f"of the {arr.size} points it is evaluated at (first at index "
                        f"{tuple(map(int, first))})")
    return arr


def evaluate(fn, field: str, *args, shape: tuple) -> np.ndarray:
    """Call the data callable ``fn(*args)`` and check its values (:func:`check_values`).

    Parameters
    ----------
    fn : callable
        ``f``, ``alpha``, ``exact`` or a kernel.
    field : str
        Its name for messages (``"f"``, ``"terms[1].kernel"``).
    *args : numpy.ndarray
        The points (``x``, or ``x`` and ``t``) it is evaluated at.
    shape : tuple of int
        The shape of the values expected.

    Returns
    -------
    numpy.ndarray
        float64 values of ``shape``.

    Raises
    ------
    SpecError
        ``fn`` raised (the message names the field and the exception), or its values fail
        :func:`check_values`. Numpy's ComplexWarning is never emitted: complex values are
        refused before any conversion.
    """
    try:
        values = fn(*args)
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code; one named error
        raise SpecError(f"{field} raised {type(exc).__name__} at {len(args[0])} points: "
                        f"{exc}") from exc
    return check_values(values, shape, field)


def probe_nonlinearity(fn, derivative, where: str) -> None:
    """Check at construction that a nonlinearity ``M`` is usable in training.

    ``M`` acts on the network's output, a torch tensor that requires gradients: it must
    take a tensor and return a tensor of the same shape (elementwise), finite on a probe set
    of values in [-1, 1], through which autograd can differentiate (unless ``derivative`` is
    given, which must satisfy the same).

    Parameters
    ----------
    fn : callable
        ``M``.
    derivative : callable or None
        ``M'``, if given.
    where : str
        The nonlinearity's name for messages.

    Raises
    ------
    SpecError
        Naming ``where``: ``fn`` raises on a tensor (e.g. written with numpy), returns
        something that is not a tensor or has another shape (a scalar), is not finite on the
        probe values, or cannot be differentiated.
    """
    import torch

    u = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).reshape(3, 4).requires_grad_(True)
    hint = "write M with torch operations (torch.sin, u**2, ...), elementwise"
    try:
        out = fn(u)
    except Exception as exc:  # noqa: BLE001 - user code
        raise SpecError(f"{where} raised {type(exc).__name__} on a torch tensor ({exc}); "
                        f"{hint}") from exc
    if not isinstance(out, torch.Tensor):
        raise SpecError(f"{where} returned {type(out).__name__}, not a torch tensor; {hint}")
    if out.shape != u.shape:
        raise SpecError(f"{where} must be elementwise: a tensor of shape {tuple(u.shape)} gave "
                        f"shape {tuple(out.shape)}; {hint}")
    if out.is_complex() or not bool(torch.isfinite(out).all()):
        raise SpecError(f"{where} is not real and finite on values in [-1, 1]")
    if derivative is None:
        if not out.requires_grad:
            raise SpecError(f"{where} cannot be differentiated by autograd (its result does "
                            f"not depend on the input through torch operations); {hint}, or "
                            f"give derivative=")
        try:
            (grad,) = torch.autograd.grad(out.sum(), u)
        except Exception as exc:  # noqa: BLE001
            raise SpecError(f"{where} cannot be differentiated by autograd "
                            f"({type(exc).__name__}: {exc})") from exc
        what = "its autograd derivative"
    else:
        try:
            grad = derivative(u.detach())
        except Exception as exc:  # noqa: BLE001
            raise SpecError(f"{where}.derivative raised {type(exc).__name__} on a torch tensor "
                            f"({exc}); {hint}") from exc
        what = f"{where}.derivative"
        if not isinstance(grad, torch.Tensor) or grad.shape != u.shape:
            raise SpecError(f"{what} must return a tensor of the input's shape "
                            f"{tuple(u.shape)}, got {type(grad).__name__} "
                            f"{tuple(getattr(grad, 'shape', ()))}")
    if grad.is_complex() or not bool(torch.isfinite(grad).all()):
        raise SpecError(f"{what} is not real and finite on values in [-1, 1]")


def _number(value, field: str, *, low=None, finite=True) -> float:
    """``value`` as a float, or SpecError naming ``field`` (bools and strings refused)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (str, bytes)):
        raise SpecError(f"{field} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{field} must be a number, got {value!r}") from None
    if finite and not math.isfinite(out):
        raise SpecError(f"{field} must be finite, got {out}")
    if low is not None and out < low:
        raise SpecError(f"{field} must be >= {low}, got {out}")
    return out
