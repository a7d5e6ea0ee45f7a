"""Training core: objectives, optimizers and the training loop (no Dask here)."""

from daskie.train.head import LeastSquaresHead
from daskie.train.loop import TrainState, advance, train
from daskie.train.objective import Objective
from daskie.train.optimizers import LBFGS, Adam, Chain, LevenbergMarquardt, Optimizer
from daskie.train.trust_region import TrustRegion

__all__ = ["Adam", "Chain", "LBFGS", "LeastSquaresHead", "LevenbergMarquardt", "Objective",
           "Optimizer", "TrainState", "TrustRegion", "advance", "train"]
