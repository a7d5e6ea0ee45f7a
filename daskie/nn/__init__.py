"""Networks as pure functions of flat parameter vectors."""

from daskie.nn.mlp import MLP

__all__ = ["MLP"]
