"""Training core: objectives, optimizers and the training loop (no Dask here)."""

from daskie.train.loop import TrainState, advance, train
from daskie.train.objective import Objective
from daskie.train.optimizers import LBFGS, Adam, Chain, LevenbergMarquardt, Optimizer

__all__ = ["Adam", "Chain", "LBFGS", "LevenbergMarquardt", "Objective", "Optimizer",
           "TrainState", "advance", "train"]
