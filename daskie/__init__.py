"""daskie: neural-network solvers for integral equations, trained as Dask task graphs.

Importing daskie starts nothing and reads no files; the names below load on first use.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "solve": "daskie.api",
    "Problem": "daskie.problems", "IntegralTerm": "daskie.problems", "Domain": "daskie.problems",
    "Nonlinearity": "daskie.problems", "Noise": "daskie.problems", "VOLTERRA": "daskie.problems",
    "catalog": "daskie.problems",
    "QuadratureCollocation": "daskie.formulations", "OrderReduction": "daskie.formulations",
    "MLP": "daskie.nn", "DeepONet": "daskie.nn",
    "TTMLP": "daskie.nn", "Int8": "daskie.nn", "MX": "daskie.nn", "Stein": "daskie.formulations.stein",
    "Adam": "daskie.train", "LBFGS": "daskie.train", "LevenbergMarquardt": "daskie.train",
    "Chain": "daskie.train", "TrustRegion": "daskie.train", "LeastSquaresHead": "daskie.train",
    "Monolithic": "daskie.strategies", "CEPTF": "daskie.strategies",
    "DataParallel": "daskie.strategies", "BlockCoordinate": "daskie.strategies",
    "Comm": "daskie.strategies", "Balanced": "daskie.strategies", "Whole": "daskie.strategies",
    "ParaFlow": "daskie.strategies", "ParaFlowS": "daskie.strategies",
    "OperatorDataParallel": "daskie.operator",
    "ModelParallel": "daskie.strategies", "Pipeline": "daskie.strategies",
    "Hybrid": "daskie.strategies",
    "GradientDescent": "daskie.strategies", "APTS": "daskie.strategies", "SAPTS": "daskie.strategies",
    "parareal": "daskie.parallel_in_time",
    "Nystrom": "daskie.reference",
    "QMCNystrom": "daskie.reference",
    "make_plan": "daskie.plan",
    "RunStore": "daskie.store",
    "write_report": "daskie.report",
    "fit_operator": "daskie.operator", "generate_dataset": "daskie.operator",
    "learn_operator": "daskie.operator", "Operator": "daskie.operator",
    "Family": "daskie.problems.families", "family": "daskie.problems.families",
    "ToleranceWarning": "daskie.errors", "estimate_error": "daskie.estimate",
}

# ``fit`` is imported eagerly: a lazy entry would be shadowed by the submodule daskie.fit
# once that is imported. daskie/fit.py imports nothing heavy at module level.
from daskie.fit import fit  # noqa: E402

__all__ = sorted([*_LAZY, "fit"])


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'daskie' has no attribute {name!r}")


def __dir__():
    return __all__
