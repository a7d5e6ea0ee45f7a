"""Networks as pure functions of flat parameter vectors."""

from daskie.nn.deeponet import DeepONet
from daskie.nn.mlp import MLP

__all__ = ["DeepONet", "MLP"]
