"""Registrations of Keras' own layers: prunable weights, channels, FLOPs, initializers."""

import keras

from tfsparse.registry import flops
from tfsparse.registry.channels import (
    CONCAT, COUPLE, FLATTEN, FOLLOW, IN, MID, OUT, PRODUCE, REPEAT, SEPARABLE, ChannelRule, Unsupported, WeightAxis,
    kernel_rule)
from tfsparse.registry.spec import SUBLAYERS, register_layer

_L = keras.layers
CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax", "glu", "sparsemax")


def _bias(layer):
    return (WeightAxis("bias", 0, OUT),) if layer.use_bias else ()


def _conv(layer, rank):
    if layer.groups != 1:
        raise Unsupported(f"{type(layer).__name__} {layer.name!r}, which is a grouped convolution (groups={layer.groups})")
    return kernel_rule(-2, -1, "filters", layer.use_bias)


def _conv_transpose(layer, rank):
    return kernel_rule(-1, -2, "filters", layer.use_bias)


def _dense(layer, rank):
    return kernel_rule(-2, -1, "units", layer.use_bias)


def _depthwise(layer, rank):
    return ChannelRule(REPEAT, (WeightAxis("kernel", -2, IN),) + _bias(layer))


def _separable(layer, rank):
    axes = (
        WeightAxis("depthwise_kernel", -2, IN),
        WeightAxis("pointwise_kernel", -2, MID, summed=True),
        WeightAxis("pointwise_kernel", -1, OUT),
    )
    return ChannelRule(SEPARABLE, axes + _bias(layer), "filters")


def _normalization(weights):
    def rule(layer, rank):
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if sorted(a % rank for a in axis) != [rank - 1]:
            raise Unsupported(
                f"{type(layer).__name__} {layer.name!r}, which normalizes over axis {layer.axis}, "
                f"not the channel axis alone"
            )
        # `center=False` or `scale=False` leave out beta or gamma.
        present = {w.name for w in layer.weights}
        return ChannelRule(FOLLOW, tuple(WeightAxis(n, 0, IN) for n in weights if n in present))

    return rule


def _prelu(layer, rank):
    shared = layer.alpha.shape[-1] == 1
    return ChannelRule(FOLLOW, () if shared else (WeightAxis("alpha", -1, IN),))


def _activation(layer, rank):
    name = layer.get_config()["activation"]
    if not isinstance(name, str) or name in CHANNEL_MIXING_ACTIVATIONS:
        raise Unsupported(f"Activation {layer.name!r}, which applies {name!r}, not a built-in elementwise activation")
    return ChannelRule(FOLLOW)


def _rescaling(layer, rank):
    config = layer.get_config()
    if not all(isinstance(config[k], (int, float)) for k in ("scale", "offset")):
        raise Unsupported(f"Rescaling {layer.name!r}, which scales or offsets each channel differently")
    return ChannelRule(FOLLOW)


def _concatenate(layer, rank):
    return ChannelRule(CONCAT if layer.axis % rank == rank - 1 else COUPLE)


_KERNEL = ("kernel",)
_output_kernel_flops = flops.kernel_flops(flops.output_positions, _KERNEL)

register_layer(_L.Dense, _KERNEL, _dense, _output_kernel_flops)
register_layer(_L.EinsumDense, _KERNEL, None, flops.kernel_flops(flops.einsum_positions, _KERNEL))
for cls in (_L.Conv1D, _L.Conv2D, _L.Conv3D):
    register_layer(cls, _KERNEL, _conv, _output_kernel_flops)
for cls in (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose):
    register_layer(cls, _KERNEL, _conv_transpose, flops.kernel_flops(flops.input_positions, _KERNEL))
for cls in (_L.DepthwiseConv1D, _L.DepthwiseConv2D):
    register_layer(cls, _KERNEL, _depthwise, _output_kernel_flops, {"kernel": "depthwise_initializer"})
_SEPARABLE_KERNELS = ("depthwise_kernel", "pointwise_kernel")
for cls in (_L.SeparableConv1D, _L.SeparableConv2D):
    register_layer(
        cls, _SEPARABLE_KERNELS, _separable, flops.kernel_flops(flops.output_positions, _SEPARABLE_KERNELS),
        {"depthwise_kernel": "depthwise_initializer", "pointwise_kernel": "pointwise_initializer"},
    )
register_layer(
    _L.Embedding, ("embeddings",), ChannelRule(PRODUCE, (WeightAxis("embeddings", -1, OUT),), "output_dim"),
    flops.kernel_flops(flops.no_positions, ("embeddings",)),
)
# Recurrent layers as TFMOT prunes them: the kernel and recurrent kernel of
# each cell. `RNN` covers SimpleRNN, GRU and LSTM (its subclasses), with
# any prunable cell; `StackedRNNCells` and `Bidirectional` prune what they hold.
for cls in (_L.SimpleRNNCell, _L.GRUCell, _L.LSTMCell):
    register_layer(cls, ("kernel", "recurrent_kernel"))
for cls in (_L.RNN, _L.StackedRNNCells, _L.Bidirectional):
    register_layer(cls, SUBLAYERS)
# MultiHeadAttention: the kernels of its query, key, value and output
# projections (EinsumDense sublayers), as TFMOT prunes them.
register_layer(_L.MultiHeadAttention, ("query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"))
register_layer(
    _L.BatchNormalization, channels=_normalization(("gamma", "beta", "moving_mean", "moving_variance")),
    flops=flops.elementwise_flops,
)
register_layer(_L.LayerNormalization, channels=_normalization(("gamma", "beta")))
register_layer(_L.RMSNormalization, channels=_normalization(("scale",)))
register_layer(_L.PReLU, channels=_prelu)
register_layer(_L.Activation, channels=_activation)
register_layer(_L.Rescaling, channels=_rescaling)
register_layer(_L.Reshape, channels=ChannelRule(FOLLOW, width="target_shape"))
register_layer(_L.Flatten, channels=ChannelRule(FLATTEN))
register_layer(_L.Concatenate, channels=_concatenate)
for cls in (_L.Add, _L.Subtract, _L.Multiply, _L.Maximum, _L.Minimum, _L.Average):
    register_layer(cls, channels=ChannelRule(COUPLE))
# Elementwise layers, pooling and padding: channels pass through one to one.
for cls in (
    _L.ReLU, _L.LeakyReLU, _L.ELU, _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D,
    _L.GaussianDropout, _L.GaussianNoise, _L.AlphaDropout, _L.ActivityRegularization, _L.Identity, _L.RepeatVector,
    _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D, _L.AveragePooling1D, _L.AveragePooling2D,
    _L.AveragePooling3D, _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D,
    _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D,
    _L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D,
    _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D,
):
    register_layer(cls, channels=ChannelRule(FOLLOW))
