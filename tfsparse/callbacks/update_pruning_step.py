"""`UpdatePruningStep`: TFMOT's callback name, kept so TFMOT code runs as is."""

import keras

from tfsparse.walk import wrappers


@keras.saving.register_keras_serializable(package="tfsparse")
class UpdatePruningStep(keras.callbacks.Callback):
    """Checks, when training begins, that the model has something to prune.

    **This callback is optional.** In tfsparse the pruning step counter and
    the mask updates run inside the compiled training step (see
    `tfsparse.layers.Masked`), so `model.fit` and custom training loops prune
    on schedule without it. It exists so that code written for TFMOT
    (`callbacks=[UpdatePruningStep()]`) runs unchanged, and it keeps TFMOT's
    check: training a model with no scheduled pruning layer is an error. It
    has no per-batch hook, so it costs nothing per step. TFMOT's
    custom-training-loop recipe (`set_model`, `on_train_begin`,
    `on_train_batch_begin`, `on_epoch_end(batch=-1)`) runs unchanged.

    One difference from TFMOT: on a model with nothing to prune, TFMOT's
    callback does nothing, and training goes on dense without a word; this
    one raises, since pruning was asked for and would silently not happen.

    Raises:
        ValueError: at the start of `fit` if the model holds no
            `tfsparse.layers.Masked` layer with a pruning schedule.

    Example:

    >>> pruned = tfsparse.prune_low_magnitude(model, tfsparse.schedules.ConstantSparsity(0.8, begin_step=1))
    >>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = pruned.fit(x, y, verbose=0, callbacks=[tfsparse.callbacks.UpdatePruningStep()])
    >>> int(pruned.get_layer("prune_low_magnitude_conv2").pruning_step)  # 256 examples in batches of 32
    8
    """

    def on_train_begin(self, logs=None):
        if not any(layer.target_sparsity() is not None for _, layer in wrappers(self.model)):
            raise ValueError(
                f"UpdatePruningStep found no layer to prune in model {self.model.name!r}: it "
                f"holds no tfsparse.layers.Masked layer with a pruning schedule. Wrap the model "
                f"with `tfsparse.prune_low_magnitude(model, pruning_schedule)` first."
            )

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        """Does nothing (masks apply in `call`); accepts TFMOT's call `on_epoch_end(batch=-1)`."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
