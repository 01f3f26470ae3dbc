"""Keras layer wrappers that parametrize a layer's weights."""

from tfsparse.layers.fixed import Fixed
from tfsparse.layers.frozen import Frozen
from tfsparse.layers.gate import BlockGate, Gated
from tfsparse.layers.masked import Masked
from tfsparse.layers.scored import Scored
from tfsparse.layers.wrapper import ParametrizedWrapper

__all__ = ["BlockGate", "Fixed", "Frozen", "Gated", "Masked", "ParametrizedWrapper", "Scored"]
