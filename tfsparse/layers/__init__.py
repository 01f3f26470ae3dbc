"""Keras layer wrappers that parametrize a layer's weights."""

from tfsparse.layers.fixed import Fixed
from tfsparse.layers.frozen import Frozen
from tfsparse.layers.gate import BlockGate, Gated
from tfsparse.layers.masked import Masked
from tfsparse.layers.scored import Scored
from tfsparse.layers.wrapper import LayerWrapper, ParametrizedWrapper

__all__ = ["BlockGate", "Fixed", "Frozen", "Gated", "LayerWrapper", "Masked", "ParametrizedWrapper", "Scored"]
