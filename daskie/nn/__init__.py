"""Networks as pure functions of flat parameter vectors."""

from daskie.nn.deeponet import DeepONet
from daskie.nn.mlp import MLP
from daskie.nn.quant import MX, Int8
from daskie.nn.tt import TTMLP

__all__ = ["DeepONet", "MLP", "TTMLP", "Int8", "MX"]
