"""How graph surgery maps a layer's channels: its registered rule, checked against the layer.

The rules themselves live in the layer registry (`tfsparse.registry`); this
module adds what every layer must satisfy to be mapped channel by channel
(channels-last, every weight sliced by a rule, a Keras layer rather than a
`keras.ops` operation), and the config of a narrower copy.
"""

import keras

from tfsparse.registry import spec_of
from tfsparse.registry.channels import Unsupported


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
    spec = spec_of(layer)
    rule = None if spec is None else spec.channel_rule(layer, rank) if _channels_last(layer) else None
    if rule is None:
        if not isinstance(layer, keras.layers.Layer):
            raise Unsupported(
                f"the keras.ops operation {kind.__name__} {layer.name!r}, which the graph cannot map channel by "
                f"channel (the keras.layers equivalents can be)"
            )
        if isinstance(layer, keras.Model):
            raise Unsupported(
                f"{kind.__name__} {layer.name!r}, which is a nested model (the graph does not enter them)"
            )
        if not _channels_last(layer):
            raise Unsupported(
                f"{kind.__name__} {layer.name!r}, which is channels_first (only channels_last is supported)"
            )
        raise Unsupported(
            f"{kind.__name__} {layer.name!r}, which is not a layer type the graph can map channel by channel "
            f"(register its channel rule with `tfsparse.register_layer`)"
        )
    unknown = {w.name for w in layer.weights} - rule.weight_names()
    if unknown:
        raise Unsupported(
            f"{kind.__name__} {layer.name!r}, which holds weights that cannot be sliced by channel: {sorted(unknown)}"
        )
    return rule


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") != "channels_first"
