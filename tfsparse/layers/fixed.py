"""`Fixed`: a layer whose variables never train, though it runs in training mode."""

import keras

from tfsparse.layers.wrapper import LayerWrapper


@keras.saving.register_keras_serializable(package="tfsparse")
class Fixed(LayerWrapper):
    """Keeps every variable of a layer as it is, while the layer still trains.

    The wrapped layer's variables are made non-trainable when the wrapper is
    built, so optimizers never see them; being part of the wrapper's
    construction, this survives `save` and `keras.saving.load_model`, which
    keep layer configs but not the `trainable` flag of single variables.
    The layer itself stays trainable and is called with the `training`
    argument it is given: a BatchNormalization layer normalizes with batch
    statistics in training and updates its moving statistics (with
    `trainable=False` it would run in inference mode, as Keras 3 does).

    Args:
        layer: the Keras layer to wrap.
        **kwargs: base layer arguments (`name`, ...).

    Example:

    >>> bn = Fixed(keras.layers.BatchNormalization())
    >>> y = bn(np.random.rand(8, 4).astype("float32"), training=True)
    >>> [v.trainable for v in bn.weights]
    [False, False, False, False]
    """

    def build(self, input_shape=None):
        super().build(input_shape)
        for variable in self.layer.variables:
            variable.trainable = False
        self.built = True

    def call(self, inputs, training=None, **kwargs):
        return self.layer(inputs, training=training, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
