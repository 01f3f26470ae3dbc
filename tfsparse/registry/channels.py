"""The vocabulary of channel rules: what a layer does with the channels of its inputs.

The channel axis is the last axis of every tensor (channels-last). A rule
says what a layer does with the channels of its inputs, and which axes of
its weights are indexed by them:

- `PRODUCE`: the outputs are new channels (Conv, Dense, Embedding, the
  pointwise part of SeparableConv); the inputs are consumed.
- `FOLLOW`: the outputs are the input channels, one to one (normalization,
  elementwise activations, pooling, padding, dropout, a Reshape that keeps
  the last axis, ...).
- `REPEAT`: each input channel gives `depth_multiplier` output channels
  (DepthwiseConv).
- `SEPARABLE`: a depthwise part that follows the input, then a pointwise
  part that produces the outputs (SeparableConv).
- `COUPLE`: elementwise merges (Add, Subtract, Multiply, ...): all inputs
  share their channels with the output.
- `CONCAT`: Concatenate on the channel axis: channel offsets add up.
- `FLATTEN`: channel `c` of a `(..., C)` input is at `c + k*C` in the output.
"""

import dataclasses

PRODUCE, FOLLOW, REPEAT, SEPARABLE, COUPLE, CONCAT, FLATTEN = (
    "produce", "follow", "repeat", "separable", "couple", "concat", "flatten")

# Which channels index a weight axis: the layer's input, its output, or (for
# SeparableConv) the depthwise outputs between its two kernels.
IN, MID, OUT = "in", "mid", "out"


class Unsupported(Exception):
    """A layer that cannot be mapped channel by channel; the message says why."""


@dataclasses.dataclass(frozen=True)
class WeightAxis:
    """An axis of a weight indexed by channels.

    Attributes:
        weight: the weight's name (`kernel`, `gamma`, ...).
        axis: the axis of that weight.
        channels: `IN`, `MID` or `OUT`.
        summed: whether this axis reads the channels (a consumer's input
            axis): when channels are merged, their slices along it are summed
            into the kept one. Other axes keep the kept channel's slice.
    """

    weight: str
    axis: int
    channels: str
    summed: bool = False


@dataclasses.dataclass(frozen=True)
class ChannelRule:
    """What a layer does with channels.

    Attributes:
        kind: one of `PRODUCE`, `FOLLOW`, `REPEAT`, `SEPARABLE`, `COUPLE`,
            `CONCAT`, `FLATTEN`.
        axes: the weight axes indexed by channels.
        width: the config key that holds the output width (`filters`,
            `units`, ...), `None` if the width follows from the inputs.
    """

    kind: str
    axes: tuple = ()
    width: str | None = None

    def weight_names(self):
        return {a.weight for a in self.axes}


def kernel_rule(in_axis, out_axis, width, bias=True):
    """The rule of a layer whose kernel maps input channels to output channels.

    Args:
        in_axis: the kernel axis indexed by input channels.
        out_axis: the kernel axis indexed by output channels.
        width: the config key of the number of output channels (`"units"`).
        bias: whether the layer has a `bias` weight indexed by output channels.

    Returns:
        A `PRODUCE` `ChannelRule`.

    Example:

    >>> rule = kernel_rule(-2, -1, "units")
    >>> [(a.weight, a.axis, a.channels) for a in rule.axes]
    [('kernel', -2, 'in'), ('kernel', -1, 'out'), ('bias', 0, 'out')]
    """
    axes = (WeightAxis("kernel", in_axis, IN, summed=True), WeightAxis("kernel", out_axis, OUT))
    return ChannelRule(PRODUCE, axes + ((WeightAxis("bias", 0, OUT),) if bias else ()), width)
