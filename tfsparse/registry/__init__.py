"""The layer registry: how tfsparse prunes, rebuilds, counts and initializes each layer type.

Keras' own layers are registered when tfsparse is imported; register a
custom layer with `tfsparse.register_layer`.
"""

from tfsparse.registry import keras_layers  # noqa: F401  (registers Keras' layers)
from tfsparse.registry.channels import (
    CONCAT, COUPLE, FLATTEN, FOLLOW, IN, MID, OUT, PRODUCE, REPEAT, SEPARABLE, ChannelRule, Unsupported, WeightAxis,
    kernel_rule)
from tfsparse.registry.flops import elementwise_flops, kernel_flops, output_positions
from tfsparse.registry.spec import (
    SUBLAYERS, LayerSpec, check_prunable, initializer_of, is_prunable, named_weights, prunable_layer_types,
    prunable_weight_names, register_layer, spec_of)

__all__ = [
    "CONCAT", "COUPLE", "ChannelRule", "FLATTEN", "FOLLOW", "IN", "LayerSpec", "MID", "OUT", "PRODUCE", "REPEAT",
    "SEPARABLE", "SUBLAYERS", "Unsupported", "WeightAxis", "check_prunable", "elementwise_flops", "initializer_of",
    "is_prunable", "kernel_flops", "kernel_rule", "named_weights", "output_positions", "prunable_layer_types",
    "prunable_weight_names", "register_layer", "spec_of",
]
