"""`hap`: Hessian-aware pruning with neural implants (Yu et al., WACV 2022)."""

import collections
import math

import keras
import numpy as np

from tfsparse import checks
from tfsparse.methods.structured import TARGETS, rank_channels, removed_channels, shortest_prefix
from tfsparse.registry import output_positions
from tfsparse.registry.flops import recorded_input_shape
from tfsparse.scoring import HessianTrace
from tfsparse.surgery import RemovalCost, copy_layer, remove_channels, replace_layers
from tfsparse.surgery.clone import clone_uncompiled
from tfsparse.walk import weight_named

IMPLANT_SUFFIX = "_implant"


def hap(model, ratio, data, implant_fraction=0.1, samples=32, target="params", batches=1, loss=None, seed=None,
        max_layer_ratio=0.95, round_to=None, exclude=(), per="channel", verbose=1, print_fn=print):
    """Hessian-aware pruning: removes the least sensitive channels, and implants a 1x1 convolution for some.

    Every channel of every prunable group (see
    `tfsparse.surgery.dependency_groups`) is scored by HAP's relative
    sensitivity `T_c * ||W_c||^2 / numel(W_c)` (`tfsparse.scoring.HessianTrace`,
    a Hutchinson estimate of the Hessian trace of its kernel entries, with
    `samples` Rademacher vectors), and all channels are ranked together,
    as in the official code. The least sensitive channels are taken until
    `ratio` of the `target` is gone. Of those, the `implant_fraction` most
    sensitive ones (the channels just below the threshold) are not removed
    but implanted: their k x k filters are replaced by a zero-initialised
    1x1 convolution with the layer's stride, in parallel with the kept
    filters (see `implant`); the others are removed with
    `tfsparse.surgery.remove_channels`. A residual group loses (or
    implants) the same channels in all its producers (the official code
    lets each layer of a residual sum choose its own). The implanted
    channels are moved after the kept ones (every layer that reads them
    is permuted alike, which changes nothing of the function), so that a
    `Concatenate` of the two convolutions gives them in order: the model
    holds only Keras' own layers and converts to TFLite without a gather.

    At the start of fine-tuning the implanted channels are zero where the
    convolution outputs them: without a BatchNormalization or bias that
    shifts them, the model computes what the plainly pruned model (the
    implanted channels removed too) computes. Implants learn through the
    normalization that follows them, as in the official code (written for
    networks with BatchNormalization after every convolution): while an
    implanted channel is zero, a ReLU after it passes a gradient only if
    the BatchNormalization offset (`beta`, plus the other terms of a
    residual sum) lifts it above zero. So the implants of a trained network
    learn where its offsets are positive; a zero implant directly followed
    by ReLU, or in an untrained network (`beta` = 0), gets no gradient.

    Only `Conv2D` layers (channels-last, one group) take implants; a
    channel produced by any other layer (Dense, DepthwiseConv2D,
    SeparableConv2D, Conv1D/3D, ...) is removed plainly, as is a channel
    of a group whose channels cannot all be permuted alike (some pinned,
    or read unevenly). Channels are never
    removed from the model's outputs, beyond `max_layer_ratio` of a group
    (the official code keeps 5%) or down to no channel.

    Args:
        model: a built functional or Sequential `keras.Model` (tfsparse
            wrappers are stripped first).
        ratio: the fraction in [0, 1) of the `target` to remove; implants
            count (their weights and FLOPs are added back), so the pruned
            model is within one channel of it.
        data: batches for the Hessian: a `tf.data.Dataset`, an iterable of
            `(x, y)` batches or one `(x, y)` tuple.
        implant_fraction: the fraction in [0, 1] of the selected channels
            that are implanted rather than removed (0: plain HAP).
        samples: Rademacher vectors of the trace estimate.
        target: `"params"`, `"flops"` (of the whole model, as
            `tfsparse.summary` counts them) or `"channels"` (of the
            prunable groups; an implanted channel is not removed).
        batches, loss, seed, verbose: as for `tfsparse.scoring.hessian_trace`.
        max_layer_ratio, round_to, exclude: as for `tfsparse.prune_channels`.
        per: `"channel"` (HAP's per-channel traces) or `"layer"` (one trace
            per kernel, far less noisy; see `tfsparse.scoring.HessianTrace`).
        print_fn: called with a one-line report; `None` prints nothing.

    Returns:
        A new, uncompiled functional `keras.Model` with the same layer types,
        narrower, plus the implants (`Conv2D` layers named
        `<layer>_implant`, and the `Concatenate` and `Cropping2D` layers
        that place them); `model` is left unchanged.

    Raises:
        ValueError: for a `ratio` or `max_layer_ratio` outside [0, 1), an
            `implant_fraction` outside [0, 1], an unknown `target`, bad
            estimator arguments, or a target that cannot be reached.
        TypeError: as `tfsparse.prune_channels`.

    Example:

    >>> small = tfsparse.hap(pretrained, 0.3, (x[:64], y[:64]), samples=4, verbose=0, print_fn=None)
    >>> 0.3 <= 1 - small.count_params() / pretrained.count_params() < 0.32  # within one channel
    True
    >>> any(layer.name.endswith("_implant") for layer in small.layers)
    True
    """
    ratio = checks.check_fraction(ratio, "ratio")
    implant_fraction = checks.check_fraction(implant_fraction, "implant_fraction", include_one=True)
    if target not in TARGETS:
        raise ValueError(f"Argument `target` must be one of {TARGETS}, received: {target!r}.")
    criterion = HessianTrace(samples, batches, loss, seed, verbose, per)
    model, groups, units = rank_channels(model, criterion, data, "global", max_layer_ratio, round_to, exclude)
    plan = _Plan(model, groups, implant_fraction)
    count = shortest_prefix(units, lambda prefix: plan.measures(prefix)[target], ratio, target, max_layer_ratio)
    removed, implanted = plan.split(units[:count])
    if print_fn is not None:
        reached = ", ".join(f"{value:.2%} of {name}" for name, value in plan.measures(units[:count]).items())
        print_fn(f"hap: removed {reached}, with {sum(map(len, implanted.values()))} channels implanted "
                 f"(asked: {ratio:.2%} of {target}).")
    # Implanted channels last, in every group that has some: new channel j is old channel order[j].
    orders = {i: [c for c in range(groups[i].size) if c not in set(cs)] + cs for i, cs in implanted.items()}
    moved = _permuted(model, groups, orders)
    positions = {i: np.argsort(order) for i, order in orders.items()}
    pruned = remove_channels(moved, {groups[i]: sorted(int(positions[i][c]) for c in channels) if i in positions
                                     else channels for i, channels in removed.items()})
    return implant(pruned, {name: len(cs) for i, cs in implanted.items() for name in groups[i].producers})


def implant(model, channels):
    """Returns a copy of `model` where zero 1x1 implants compute the last output channels of `Conv2D` layers.

    Each named convolution is split in two, run in parallel on its input
    and concatenated: a convolution of its name keeps the first filters
    with their weights, and a zero-initialised 1x1 convolution with the
    same stride, activation and bias use (zero bias), named
    `<layer>_implant`, computes the last `channels[name]` output channels
    from the centre of each k x k window (a `Cropping2D` aligns it where
    the centres are not the first input positions). The implanted
    channels then start at the activation of zero, whatever the
    convolution computed for them.

    Args:
        model: a built functional or Sequential `keras.Model`.
        channels: `{Conv2D layer name: how many of its last output channels
            to implant}`.

    Returns:
        A new, uncompiled functional `keras.Model`.

    Raises:
        ValueError: if a name is not a layer of `model`, a layer is not a
            channels-last, ungrouped `Conv2D` with 'same' or 'valid' padding,
            or a count is not between 1 and its filters minus one.

    Example:

    >>> implanted = tfsparse.methods.implant(model, {"conv1": 2})
    >>> implanted.get_layer("conv1").filters, tuple(implanted.get_layer("conv1_implant").kernel.shape)
    (14, (1, 1, 1, 2))
    >>> implanted.count_params() - model.count_params()  # 2 filters of 3 x 3 -> 1 x 1
    -16
    >>> merged = keras.Model(implanted.inputs, implanted.get_layer("conv1_implant_merge").output)
    >>> float(np.abs(merged(x[:2])[..., 14:]).max())  # the implanted channels start at relu(0)
    0.0
    """
    build_fns = {name: lambda conv, n=count: _implanted(conv, n) for name, count in channels.items()}
    return replace_layers(model, build_fns)


def _permuted(model, groups, orders):
    """A copy of `model` with the channels of some groups reordered: new channel j of group i is `orders[i][j]`."""
    copy = clone_uncompiled(model, clone_function=copy_layer)
    arrays = {}
    for index, order in orders.items():
        for piece in groups[index].slices:
            key = piece.layer, piece.weight
            if key not in arrays:
                arrays[key] = keras.ops.convert_to_numpy(weight_named(copy.get_layer(piece.layer), piece.weight))
            source = np.arange(arrays[key].shape[piece.axis])
            for new, old in enumerate(order):
                source[list(piece.positions[new])] = piece.positions[old]
            arrays[key] = np.take(arrays[key], source, axis=piece.axis)
    for (layer, weight), array in arrays.items():
        weight_named(copy.get_layer(layer), weight).assign(array)
    return copy


class _Plan:
    """Which selected channels are implanted, and what the selection removes with its implants."""

    def __init__(self, model, groups, implant_fraction):
        self.model, self.groups, self.fraction = model, groups, implant_fraction
        self.cost = RemovalCost(model, groups)
        self.total_channels = sum(group.size for group in groups)
        self.implantable = [_implantable(model, group) for group in groups]
        # Per producer of an implantable group: (kernel entries saved per input per channel, output positions).
        self.savings = {}
        for group, implantable in zip(groups, self.implantable):
            for name in group.producers if implantable else ():
                layer = model.get_layer(name)
                positions = output_positions(layer, recorded_input_shape(layer))
                self.savings[name] = (math.prod(layer.kernel_size) - 1, positions)

    def split(self, units):
        """`(removed, implanted)`: `{group index: channels}` of a prefix of the ranked steps."""
        order = [(index, c) for _, index, _, channels in units for c in channels]
        wanted = round(self.fraction * len(order))
        implanted = collections.defaultdict(list)
        for index, channel in reversed(order):  # the most sensitive of the selection first
            if wanted == 0:
                break
            if self.implantable[index]:
                implanted[index].append(channel)
                wanted -= 1
        removed = removed_channels(units)
        removed = {i: [c for c in cs if c not in implanted.get(i, ())] for i, cs in removed.items()}
        return {i: cs for i, cs in removed.items() if cs}, {i: sorted(cs) for i, cs in implanted.items()}

    def measures(self, units):
        """`{target: fraction removed}` by a prefix of the ranked steps, implants counted."""
        removed, implanted = self.split(units)
        parameters, flops = self.cost.saved(removed)
        widths = self._input_widths(removed)
        for index, channels in implanted.items():
            for name in self.groups[index].producers:
                entries, positions = self.savings[name]
                parameters += entries * widths[name] * len(channels)
                flops += 2 * positions * entries * widths[name] * len(channels)
        return {
            "channels": sum(map(len, removed.values())) / self.total_channels if self.total_channels else 0.0,
            "params": parameters / self.cost.parameters if self.cost.parameters else 0.0,
            "flops": flops / self.cost.flops if self.cost.flops else 0.0,
        }

    def _input_widths(self, removed):
        """`{producer: input channels}` of the implantable producers after `removed` is gone."""
        widths = {name: self.model.get_layer(name).kernel.shape[-2] for name in self.savings}
        for index, channels in removed.items():
            for piece in self.groups[index].slices:
                if piece.role == "consumer" and piece.layer in widths and piece.weight == "kernel":
                    widths[piece.layer] -= sum(len(piece.positions[c]) for c in channels)
        return widths


def _implantable(model, group):
    """Whether a group's channels can take implants: Conv2D producers, channels in producer order, permutable."""
    identity = list(range(group.size))
    return (not group.pinned
            and all(_takes_implant(model.get_layer(p)) and group.indices(p) == identity for p in group.producers)
            and all(len({len(p) for p in piece.positions}) == 1 for piece in group.slices))


def _takes_implant(layer):
    """Whether `layer` is a channels-last, ungrouped `Conv2D` with 'same' or 'valid' padding."""
    return (type(layer) is keras.layers.Conv2D and layer.groups == 1 and layer.data_format == "channels_last"
            and layer.padding in ("same", "valid"))


def _implanted(conv, count):
    """`conv` with its last `count` filters computed by a zero 1x1 implant: a function of its input."""
    if not _takes_implant(conv):
        raise ValueError(
            f"Argument `channels` names {conv.name!r} ({type(conv).__name__}), which cannot take an implant: "
            f"only channels-last, ungrouped Conv2D layers with 'same' or 'valid' padding can."
        )
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < conv.filters:
        raise ValueError(
            f"Argument `channels` asks {count!r} implanted channels of {conv.name!r}, which has {conv.filters} "
            f"filters: give an integer from 1 to {conv.filters - 1}."
        )
    input_shape = recorded_input_shape(conv)
    kept_filters = conv.filters - count
    weights = [keras.ops.convert_to_numpy(w)[..., :kept_filters] for w in conv.weights]
    kept = conv.__class__.from_config({**conv.get_config(), "filters": kept_filters})
    kept.build(input_shape)
    kept.set_weights(weights)
    implant_layer = keras.layers.Conv2D(
        count, 1, strides=conv.strides, activation=conv.get_config()["activation"], use_bias=conv.use_bias,
        kernel_initializer="zeros", name=conv.name + IMPLANT_SUFFIX, dtype=conv.dtype_policy,
    )
    output_shape = conv.compute_output_shape(input_shape)
    crops = [_crop(conv, axis, input_shape[1 + axis], output_shape[1 + axis]) for axis in range(2)]
    cropping = None
    if any(map(any, crops)):
        cropping = keras.layers.Cropping2D(crops, name=conv.name + IMPLANT_SUFFIX + "_centres")
    merge = keras.layers.Concatenate(name=conv.name + IMPLANT_SUFFIX + "_merge")
    return lambda inputs: merge([kept(inputs), implant_layer(cropping(inputs) if cropping else inputs)])


def _crop(conv, axis, size, outputs):
    """`(before, after)`: input positions to drop along a spatial axis so that a strided 1x1 reads window centres."""
    if size is None:
        raise ValueError(f"Conv2D {conv.name!r} has an unknown spatial input size: an implant needs it.")
    span = conv.dilation_rate[axis] * (conv.kernel_size[axis] - 1)
    stride = conv.strides[axis]
    padding = max((outputs - 1) * stride + span + 1 - size, 0) // 2 if conv.padding == "same" else 0
    before = span // 2 - padding
    return before, size - before - ((outputs - 1) * stride + 1)
