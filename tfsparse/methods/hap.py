"""`hap`: Hessian-aware pruning with neural implants (Yu et al., WACV 2022)."""

import collections
import math

import keras

from tfsparse import checks
from tfsparse.layers import ImplantedConv2D
from tfsparse.methods.structured import TARGETS, rank_channels, removed_channels, shortest_prefix
from tfsparse.registry import output_positions
from tfsparse.registry.flops import recorded_input_shape
from tfsparse.scoring import HessianTrace
from tfsparse.surgery import RemovalCost, remove_channels, replace_layers


def hap(model, ratio, data, implant_fraction=0.1, samples=32, target="params", batches=1, loss=None, seed=None,
        max_layer_ratio=0.95, round_to=None, exclude=(), verbose=1, print_fn=print):
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
    filters (`tfsparse.layers.ImplantedConv2D`, through
    `tfsparse.surgery.replace_layer`); the others are removed with
    `tfsparse.surgery.remove_channels`. A residual group loses (or
    implants) the same channels in all its producers (the official code
    lets each layer of a residual sum choose its own).

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
    SeparableConv2D, Conv1D/3D, ...) is removed plainly. Channels are never
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
        print_fn: called with a one-line report; `None` prints nothing.

    Returns:
        A new, uncompiled functional `keras.Model` with the same layer types
        (the implanted convolutions become `ImplantedConv2D`), narrower;
        `model` is left unchanged. Its channels are pinned for further
        channel pruning.

    Raises:
        ValueError: for a `ratio` or `max_layer_ratio` outside [0, 1), an
            `implant_fraction` outside [0, 1], an unknown `target`, bad
            estimator arguments, or a target that cannot be reached.
        TypeError: as `tfsparse.prune_channels`.

    Example:

    >>> small = tfsparse.hap(pretrained, 0.3, (x[:64], y[:64]), samples=4, verbose=0, print_fn=None)
    >>> 0.3 <= 1 - small.count_params() / pretrained.count_params() < 0.32  # within one channel
    True
    >>> any(isinstance(layer, tfsparse.layers.ImplantedConv2D) for layer in small.layers)
    True
    """
    ratio = checks.check_fraction(ratio, "ratio")
    implant_fraction = checks.check_fraction(implant_fraction, "implant_fraction", include_one=True)
    if target not in TARGETS:
        raise ValueError(f"Argument `target` must be one of {TARGETS}, received: {target!r}.")
    criterion = HessianTrace(samples, batches, loss, seed, verbose)
    model, groups, units = rank_channels(model, criterion, data, "global", max_layer_ratio, round_to, exclude)
    plan = _Plan(model, groups, implant_fraction)
    count = shortest_prefix(units, lambda prefix: plan.measures(prefix)[target], ratio, target, max_layer_ratio)
    removed, implanted = plan.split(units[:count])
    if print_fn is not None:
        reached = ", ".join(f"{value:.2%} of {name}" for name, value in plan.measures(units[:count]).items())
        print_fn(f"hap: removed {reached}, with {sum(map(len, implanted.values()))} channels implanted "
                 f"(asked: {ratio:.2%} of {target}).")
    pruned = remove_channels(model, {groups[i]: channels for i, channels in removed.items()})
    return implant(pruned, plan.implants(removed, implanted))


def implant(model, channels):
    """Returns a copy of `model` where a zero 1x1 implant computes some output channels of `Conv2D` layers.

    Each named convolution becomes an `ImplantedConv2D` of the same name,
    shape and activation: the listed channels lose their k x k filters and
    bias, and are computed by a zero-initialised 1x1 convolution with the
    layer's stride instead (so they start at zero); the other channels keep
    their weights.

    Args:
        model: a built functional or Sequential `keras.Model`.
        channels: `{Conv2D layer name: output channel indices}`.

    Returns:
        A new, uncompiled functional `keras.Model`.

    Raises:
        ValueError: if a name is not a layer of `model`, or a layer is not a
            channels-last, ungrouped `Conv2D`, or an index is out of range.

    Example:

    >>> implanted = tfsparse.methods.implant(model, {"conv1": [0, 5]})
    >>> implanted.get_layer("conv1").implanted, implanted.count_params() - model.count_params()
    ((0, 5), -16)
    >>> bool(np.all(implanted.get_layer("conv1")(x[:2])[..., 0] == 0.0))  # the implanted channel starts at zero
    True
    """
    build_fns = {name: lambda conv, c=indices: _implanted(conv, c) for name, indices in channels.items()}
    return replace_layers(model, build_fns)


class _Plan:
    """Which selected channels are implanted, and what the selection removes with its implants."""

    def __init__(self, model, groups, implant_fraction):
        self.model, self.groups, self.fraction = model, groups, implant_fraction
        self.cost = RemovalCost(model, groups)
        self.total_channels = sum(group.size for group in groups)
        self.implantable = [
            all(_takes_implant(model.get_layer(p)) and -1 not in group.indices(p) for p in group.producers)
            for group in groups
        ]
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

    def implants(self, removed, implanted):
        """`{producer name: its output channels to implant, in the pruned model}`."""
        found = {}
        for index, channels in implanted.items():
            group, gone = self.groups[index], removed.get(index, [])
            for name in group.producers:
                own = group.indices(name)
                lost = sorted(own[c] for c in gone)
                found[name] = sorted(own[c] - sum(1 for g in lost if g < own[c]) for c in channels)
        return found


def _takes_implant(layer):
    """Whether `layer` is a channels-last, ungrouped `Conv2D` (its channels can be implanted)."""
    return (type(layer) is keras.layers.Conv2D and layer.groups == 1 and layer.data_format == "channels_last"
            and layer.padding in ("same", "valid"))


def _implanted(conv, channels):
    """An `ImplantedConv2D` computing `conv`'s output `channels` with a zero 1x1 implant, its other weights kept."""
    if not _takes_implant(conv):
        raise ValueError(
            f"Argument `channels` names {conv.name!r} ({type(conv).__name__}), which cannot take an implant: "
            f"only channels-last, ungrouped Conv2D layers with 'same' or 'valid' padding can."
        )
    channels = sorted(int(c) for c in channels)
    if channels and not 0 <= channels[0] <= channels[-1] < conv.filters:
        raise ValueError(
            f"Argument `channels` holds {channels} for {conv.name!r}, which has {conv.filters} output channels."
        )
    config = conv.get_config()
    layer = ImplantedConv2D(
        config["filters"], config["kernel_size"], channels, strides=config["strides"], padding=config["padding"],
        dilation_rate=config["dilation_rate"], activation=config["activation"], use_bias=config["use_bias"],
        kernel_initializer=config["kernel_initializer"], bias_initializer=config["bias_initializer"],
        name=conv.name, dtype=conv.dtype_policy,
    )
    layer.build(recorded_input_shape(conv))
    kept = [c for c in range(conv.filters) if c not in set(channels)]
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    layer.kernel.assign(kernel[..., kept])
    if conv.use_bias:
        bias = keras.ops.convert_to_numpy(conv.bias).copy()
        bias[list(channels)] = 0.0
        layer.bias.assign(bias)
    return layer
