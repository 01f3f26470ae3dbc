"""What removing channels saves: parameters and FLOPs, counted as `tfsparse.summary` counts them."""

import collections
import math

import numpy as np

from tfsparse.registry import IN
from tfsparse.registry.flops import layer_flops, recorded_input_shape
from tfsparse.surgery import rules
from tfsparse.surgery.graph import plain_model
from tfsparse.walk import leaf_layers


class RemovalCost:
    """Counts the parameters and FLOPs that `remove_channels` would save, without rebuilding the model.

    The groups' slices say which weight axes lose which positions; each
    touched layer is counted again with its narrower weights (and, for
    layers whose FLOPs follow their input width, such as
    BatchNormalization, its narrower input) by the rules of
    `tfsparse.registry`. The figures equal those of `tfsparse.summary` on
    the model `remove_channels` returns.

    Args:
        model: a built functional or Sequential model (tfsparse wrappers
            are stripped first).
        groups: `ChannelGroup`s of `dependency_groups(model)`.

    Attributes:
        parameters: the model's parameters.
        flops: the model's FLOPs for one example.

    Example:

    >>> groups = tfsparse.surgery.dependency_groups(model)
    >>> cost = tfsparse.surgery.RemovalCost(model, groups)
    >>> cost.saved({0: [0, 1]})  # two conv1 filters (9 + 1 weights each) and their inputs to conv2, conv3
    (660, 84224)
    >>> 2 * (9 + 1) + 2 * (9 * 32 + 32)
    660
    """

    def __init__(self, model, groups):
        self.model = plain_model(model)
        layers = [layer for layer in leaf_layers(self.model) if layer.weights]
        self.parameters = sum(math.prod(w.shape) for layer in layers for w in layer.weights)
        self.flops = sum(_flops(layer, {}) for layer in layers)
        self._slices = [
            [(s.layer, s.weight, s.axis, np.array([len(p) for p in s.positions])) for s in group.slices]
            for group in groups
        ]

    def saved(self, removed):
        """Returns `(parameters, FLOPs)` saved by removing channels.

        Args:
            removed: `{group index: group channel indices}`, indices into
                the `groups` given at construction.
        """
        cuts = collections.defaultdict(dict)  # layer -> {(weight, axis): positions removed}
        for index, channels in removed.items():
            for layer, weight, axis, counts in self._slices[index]:
                cut = cuts[layer]
                cut[weight, axis] = cut.get((weight, axis), 0) + int(counts[list(channels)].sum())
        parameters = flops = 0
        for name, cut in cuts.items():
            layer = self.model.get_layer(name)
            shapes = {w.name: tuple(w.shape) for w in layer.weights}
            narrow = {w: tuple(d - cut.get((w, a), 0) for a, d in enumerate(shape)) for w, shape in shapes.items()}
            parameters += sum(math.prod(shapes[w]) - math.prod(narrow[w]) for w in shapes)
            flops += _flops(layer, {}) - _flops(layer, cut)
        return parameters, flops


def _flops(layer, cut):
    """Dense FLOPs of `layer` with `cut[(weight, axis)]` positions removed from its weights."""
    weights = {w.name: _empty(w.shape, cut, w.name) for w in layer.weights}
    if not cut:
        return layer_flops(layer, weights)[0]
    input_shape = recorded_input_shape(layer)
    rule = rules.channel_rule(layer, len(input_shape))
    inputs_cut = max((n for (w, a), n in cut.items() if _reads_inputs(rule, layer, w, a)), default=0)
    return layer_flops(layer, weights, (*input_shape[:-1], input_shape[-1] - inputs_cut))[0]


def _reads_inputs(rule, layer, weight, axis):
    """Whether `axis` of `weight` is indexed by the layer's input channels."""
    rank = {w.name: len(w.shape) for w in layer.weights}[weight]
    return any(a.weight == weight and a.axis % rank == axis and a.channels == IN for a in rule.axes)


def _empty(shape, cut, name):
    """A read-only array of zeros shaped like weight `name` after the cut (no memory per entry)."""
    return np.broadcast_to(np.float32(0), tuple(d - cut.get((name, a), 0) for a, d in enumerate(shape)))
