"""How each Keras layer type carries channels, and which weight axes follow them.

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

Layer types are matched exactly: a subclass (a custom layer) may compute
something else, so it has no rule.
"""

import dataclasses

import keras

PRODUCE, FOLLOW, REPEAT, SEPARABLE, COUPLE, CONCAT, FLATTEN = (
    "produce", "follow", "repeat", "separable", "couple", "concat", "flatten")

# Which channels index a weight axis: the layer's input, its output, or (for
# SeparableConv) the depthwise outputs between its two kernels.
IN, MID, OUT = "in", "mid", "out"

CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax", "glu", "sparsemax")


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


def _kernel(in_axis, out_axis, bias=True):
    axes = (WeightAxis("kernel", in_axis, IN, summed=True), WeightAxis("kernel", out_axis, OUT))
    return axes + ((WeightAxis("bias", 0, OUT),) if bias else ())


_L = keras.layers
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_CONV_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_POOLING = (
    _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D, _L.AveragePooling1D, _L.AveragePooling2D,
    _L.AveragePooling3D, _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D,
    _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D,
    _L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D,
    _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D,
)
_ELEMENTWISE = (
    _L.ReLU, _L.LeakyReLU, _L.ELU, _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D,
    _L.SpatialDropout3D, _L.GaussianDropout, _L.GaussianNoise, _L.AlphaDropout, _L.ActivityRegularization,
    _L.Identity, _L.RepeatVector,
)
_MERGE = (_L.Add, _L.Subtract, _L.Multiply, _L.Maximum, _L.Minimum, _L.Average)
_NORMALIZATION = {
    _L.BatchNormalization: ("gamma", "beta", "moving_mean", "moving_variance"),
    _L.LayerNormalization: ("gamma", "beta"),
    _L.RMSNormalization: ("scale",),
}

SUPPORTED_LAYERS = (
    *_CONV, *_CONV_TRANSPOSE, _L.Dense, _L.Embedding, *_DEPTHWISE, *_SEPARABLE, *_NORMALIZATION, _L.PReLU,
    _L.Activation, *_ELEMENTWISE, *_POOLING, _L.Rescaling, _L.Reshape, _L.Flatten, *_MERGE, _L.Concatenate,
)


def _set_target_width(config, width):
    shape = list(config["target_shape"])
    if shape[-1] != -1:
        shape[-1] = width
    config["target_shape"] = tuple(shape)


def narrow_config(layer, rule, width):
    """Returns `layer`'s config for an output of `width` channels."""
    config = layer.get_config()
    if rule.width == "target_shape":
        _set_target_width(config, width)
    elif rule.width is not None:
        config[rule.width] = width
    return config


def channel_rule(layer, rank):
    """Returns the `ChannelRule` of a layer called on inputs of rank `rank`.

    Args:
        layer: a Keras operation of a functional graph.
        rank: rank of its (first) input, batch axis included.

    Raises:
        Unsupported: if the layer cannot be mapped channel by channel; the
            message names the layer and says why ("Reshape 'r', which ...").
    """
    kind = type(layer)
    if kind not in SUPPORTED_LAYERS:
        if not isinstance(layer, keras.layers.Layer):
            raise Unsupported(
                f"the keras.ops operation {kind.__name__} {layer.name!r}, which the graph cannot map channel by "
                f"channel (the keras.layers equivalents can be)"
            )
        if isinstance(layer, keras.Model):
            raise Unsupported(
                f"{kind.__name__} {layer.name!r}, which is a nested model (the graph does not enter them)"
            )
        raise Unsupported(
            f"{kind.__name__} {layer.name!r}, which is not a layer type the graph can map channel by channel "
            f"(see tfsparse.surgery.rules.SUPPORTED_LAYERS)"
        )
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        raise Unsupported(f"{kind.__name__} {layer.name!r}, which is channels_first (only channels_last is supported)")
    rule = _rule(layer, kind, rank)
    unknown = {w.name for w in layer.weights} - rule.weight_names()
    if unknown:
        raise Unsupported(
            f"{kind.__name__} {layer.name!r}, which holds weights that cannot be sliced by channel: {sorted(unknown)}"
        )
    return rule


def _rule(layer, kind, rank):
    if kind in _CONV:
        if layer.groups != 1:
            raise Unsupported(f"{kind.__name__} {layer.name!r}, which is a grouped convolution (groups={layer.groups})")
        return ChannelRule(PRODUCE, _kernel(-2, -1, layer.use_bias), "filters")
    if kind in _CONV_TRANSPOSE:
        return ChannelRule(PRODUCE, _kernel(-1, -2, layer.use_bias), "filters")
    if kind is _L.Dense:
        return ChannelRule(PRODUCE, _kernel(-2, -1, layer.use_bias), "units")
    if kind is _L.Embedding:
        return ChannelRule(PRODUCE, (WeightAxis("embeddings", -1, OUT),), "output_dim")
    if kind in _DEPTHWISE:
        bias = (WeightAxis("bias", 0, OUT),) if layer.use_bias else ()
        return ChannelRule(REPEAT, (WeightAxis("kernel", -2, IN),) + bias)
    if kind in _SEPARABLE:
        axes = (
            WeightAxis("depthwise_kernel", -2, IN),
            WeightAxis("pointwise_kernel", -2, MID, summed=True),
            WeightAxis("pointwise_kernel", -1, OUT),
        )
        return ChannelRule(SEPARABLE, axes + ((WeightAxis("bias", 0, OUT),) if layer.use_bias else ()), "filters")
    if kind in _NORMALIZATION:
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if sorted(a % rank for a in axis) != [rank - 1]:
            raise Unsupported(
                f"{kind.__name__} {layer.name!r}, which normalizes over axis {layer.axis}, not the channel axis alone"
            )
        # `center=False` or `scale=False` leave out beta or gamma.
        present = {w.name for w in layer.weights}
        return ChannelRule(FOLLOW, tuple(WeightAxis(n, 0, IN) for n in _NORMALIZATION[kind] if n in present))
    if kind is _L.PReLU:
        shared = layer.alpha.shape[-1] == 1
        return ChannelRule(FOLLOW, () if shared else (WeightAxis("alpha", -1, IN),))
    if kind is _L.Activation:
        name = layer.get_config()["activation"]
        if not isinstance(name, str) or name in CHANNEL_MIXING_ACTIVATIONS:
            raise Unsupported(
                f"Activation {layer.name!r}, which applies {name!r}, not a built-in elementwise activation"
            )
        return ChannelRule(FOLLOW)
    if kind is _L.Rescaling:
        config = layer.get_config()
        if not all(isinstance(config[k], (int, float)) for k in ("scale", "offset")):
            raise Unsupported(f"Rescaling {layer.name!r}, which scales or offsets each channel differently")
        return ChannelRule(FOLLOW)
    if kind is _L.Reshape:
        return ChannelRule(FOLLOW, width="target_shape")
    if kind is _L.Flatten:
        return ChannelRule(FLATTEN)
    if kind in _MERGE:
        return ChannelRule(COUPLE)
    if kind is _L.Concatenate:
        return ChannelRule(CONCAT if layer.axis % rank == rank - 1 else COUPLE)
    return ChannelRule(FOLLOW)  # activations, dropout, pooling, padding
