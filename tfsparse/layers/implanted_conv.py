"""`ImplantedConv2D`: a convolution some of whose output channels a cheap 1x1 convolution computes (HAP's implant)."""

import math

import keras
from keras import ops

from tfsparse.registry import kernel_flops, output_positions, register_layer


@keras.saving.register_keras_serializable(package="tfsparse")
class ImplantedConv2D(keras.layers.Layer):
    """A 2D convolution whose `implanted` output channels come from a 1x1 convolution instead.

    The other output channels are computed by `kernel`, a k x k
    convolution as in `keras.layers.Conv2D`; the implanted ones by
    `implant_kernel`, a 1x1 convolution with the same stride, read at the
    centre of each k x k window (so both parts have the same output
    positions, for "same" and "valid" padding alike). The bias and the
    activation apply to all channels. A neural implant of Hessian-aware
    pruning (see `tfsparse.hap`) starts from a zero implant kernel and
    bias: its channels are zero until fine-tuning trains them.

    Args:
        filters: the number of output channels, implanted ones included.
        kernel_size: the k x k convolution's size (int or pair).
        implanted: the output channel indices the 1x1 convolution
            computes, a sorted sequence of ints below `filters`.
        strides, padding, dilation_rate, activation, use_bias: as for
            `keras.layers.Conv2D` (channels-last, one group).
        kernel_initializer, bias_initializer: initializers of `kernel`
            and `bias`; `implant_kernel` starts at zero.
        **kwargs: base layer arguments (`name`, ...).

    Example:

    >>> layer = ImplantedConv2D(4, 3, implanted=[1, 2], padding="same")
    >>> out = layer(np.ones((1, 5, 5, 3), "float32"))
    >>> tuple(out.shape), float(ops.max(ops.abs(out[..., 1:3])))  # the implanted channels start at zero
    ((1, 5, 5, 4), 0.0)
    >>> tuple(layer.kernel.shape), tuple(layer.implant_kernel.shape)  # 2 channels 3x3, 2 channels 1x1
    ((3, 3, 3, 2), (1, 1, 3, 2))
    """

    def __init__(self, filters, kernel_size, implanted, strides=1, padding="valid", dilation_rate=1, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.padding = str(padding).lower()
        if self.padding not in ("same", "valid"):
            raise ValueError(f"Argument `padding` must be 'same' or 'valid', received: {padding!r}.")
        self.implanted = tuple(int(c) for c in implanted)
        in_range = all(0 <= c < self.filters for c in self.implanted)
        if list(self.implanted) != sorted(set(self.implanted)) or not in_range:
            raise ValueError(
                f"Argument `implanted` must be sorted distinct channel indices below `filters`={self.filters}, "
                f"received: {list(implanted)}."
            )
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        kept = [c for c in range(self.filters) if c not in set(self.implanted)]
        # Output channel c is column order[c] of [kernel outputs, implant outputs].
        self._order = [0] * self.filters
        for column, channel in enumerate(kept + list(self.implanted)):
            self._order[channel] = column

    def build(self, input_shape):
        inputs = input_shape[-1]
        kept = self.filters - len(self.implanted)
        self.kernel = self.add_weight(name="kernel", shape=(*self.kernel_size, inputs, kept),
                                      initializer=self.kernel_initializer)
        self.implant_kernel = self.add_weight(name="implant_kernel", shape=(1, 1, inputs, len(self.implanted)),
                                              initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer) \
            if self.use_bias else None
        self._offsets = [self._centre(size, axis) for axis, size in enumerate(input_shape[1:3])]

    def _centre(self, size, axis):
        """Input position of the centre of the first k x k window along a spatial axis."""
        span = self.dilation_rate[axis] * (self.kernel_size[axis] - 1)
        before = 0
        if self.padding == "same":
            if size is None:
                raise ValueError(f"{type(self).__name__} {self.name!r} with padding 'same' needs static spatial sizes.")
            stride = self.strides[axis]
            before = max((math.ceil(size / stride) - 1) * stride + span + 1 - size, 0) // 2
        return span // 2 - before

    def call(self, inputs):
        outputs = ops.conv(inputs, self.kernel, strides=self.strides, padding=self.padding,
                           dilation_rate=self.dilation_rate)
        if self.implanted:
            (top, left), (down, across) = self._offsets, self.strides
            height, width = ops.shape(outputs)[1], ops.shape(outputs)[2]
            centres = inputs[:, top::down, left::across, :][:, :height, :width, :]
            implants = ops.conv(centres, self.implant_kernel, strides=1, padding="valid")
            outputs = ops.take(ops.concatenate([outputs, implants], axis=-1), self._order, axis=-1)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        spatial = []
        for axis, size in enumerate(input_shape[1:3]):
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(math.ceil(size / self.strides[axis]))
            else:
                span = self.dilation_rate[axis] * (self.kernel_size[axis] - 1)
                spatial.append((size - span - 1) // self.strides[axis] + 1)
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "implanted": list(self.implanted),
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


def _pair(value, argument):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"Argument `{argument}` must be a positive int or a pair of them, received: {value!r}.")
    return pair


# Parameters count as the layer's weights; FLOPs as both kernels at every output position. The channels are
# not mapped (`tfsparse.surgery` pins them): an implanted model is pruned already.
register_layer(ImplantedConv2D, ("kernel", "implant_kernel"), None,
               kernel_flops(output_positions, ("kernel", "implant_kernel")))
