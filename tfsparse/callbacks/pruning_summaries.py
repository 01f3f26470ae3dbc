"""`PruningSummaries`: per-layer sparsity as TensorBoard scalars."""

import os

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tfsparse.checks import ArgumentTypeError
from tfsparse.walk import wrappers

# `tf.summary.scalar` needs the tensorboard package installed; `tf.summary.write`
# with the metadata of TensorBoard's scalars plugin writes the same events
# with TensorFlow alone.
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)


@keras.saving.register_keras_serializable(package="tfsparse")
class PruningSummaries(keras.callbacks.Callback):
    """Writes the sparsity of every wrapped layer to TensorBoard, per epoch.

    At the end of an epoch it writes, with the epoch number as step:

    - `sparsity/<layer path>/<weight>`: the fraction of zeros in each
      prunable weight's *effective* value (any tfsparse wrapper);
    - `target_sparsity/<layer path>`: the sparsity each wrapper is asked
      to reach now (`target_sparsity()`: for a scheduled
      `tfsparse.layers.Masked` layer, its schedule at its `pruning_step`,
      i.e. at the last training batch, since the k-th batch is step k as in
      TFMOT; `m / n` for m-by-n sparsity).

    The events go to `log_dir` itself, so a `keras.callbacks.TensorBoard`
    writing losses to the same directory shows beside them. Unlike TFMOT's
    callback of the same name, this one only writes the pruning scalars and
    has no per-batch hook: an integer `update_freq` counts *epochs*.

    Args:
        log_dir: directory of the event files (created if missing).
        update_freq: `"epoch"` (every epoch) or an integer `n >= 1`: write
            every `n` epochs.

    Raises:
        ArgumentTypeError: (a `TypeError` and a `ValueError`, as TFMOT
            raises) if `log_dir` is not a path.
        ValueError: for an empty `log_dir` or a bad `update_freq`; at the
            start of `fit` if the model holds no tfsparse wrapper.

    Example:

    >>> pruned = tfsparse.prune_low_magnitude(model, tfsparse.schedules.ConstantSparsity(0.8, begin_step=1))
    >>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = pruned.fit(x, y, epochs=2, verbose=0,
    ...                      callbacks=[tfsparse.callbacks.PruningSummaries("logs")])
    >>> len(tf.io.gfile.glob("logs/events.out.tfevents.*"))
    1
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise ArgumentTypeError(
                f"Argument `log_dir` must be a path (str or os.PathLike), received: "
                f"{log_dir!r} (of type {type(log_dir).__name__})."
            )
        if not os.fspath(log_dir):
            raise ValueError("Argument `log_dir` must be a non-empty path, received: ''.")
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                f"Argument `update_freq` must be 'epoch' or an integer >= 1 (a number of "
                f"epochs), received: {update_freq!r}."
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._every = 1 if update_freq == "epoch" else update_freq
        self._writer = None
        self._epochs_ended = 0

    def on_train_begin(self, logs=None):
        self._wrappers = wrappers(self.model)
        if not self._wrappers:
            raise ValueError(
                f"PruningSummaries found no tfsparse wrapper in model {self.model.name!r}: "
                f"there is no sparsity to log. Wrap the model first, e.g. with "
                f"`tfsparse.prune_low_magnitude`."
            )
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        """Writes the scalars at the end of epoch `epoch` (every `update_freq` epochs).

        Also runs in TFMOT's custom-training-loop recipe, which calls
        `on_epoch_end(batch=-1)` alone: without `epoch`, the epoch is the
        number of epochs this callback has seen end (`batch` is not used),
        and the writer opens on first use if `on_train_begin` was not called.
        """
        epoch = self._epochs_ended if epoch is None else epoch
        self._epochs_ended = epoch + 1
        if (epoch + 1) % self._every:
            return
        if self._writer is None:
            self.on_train_begin()
        with self._writer.as_default():
            for path, layer in self._wrappers:
                for name, value in layer.effective_weights().items():
                    array = keras.ops.convert_to_numpy(value)
                    zeros = 1.0 - np.count_nonzero(array) / array.size
                    write_scalar(f"sparsity/{path}/{name}", zeros, epoch)
            for path, layer in self._wrappers:
                target = layer.target_sparsity()
                if target is not None:
                    write_scalar(f"target_sparsity/{path}", target, epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        return {"log_dir": self.log_dir, "update_freq": self.update_freq}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def write_scalar(tag, value, step):
    """Writes one TensorBoard scalar to the default summary writer (TensorFlow alone, no tensorboard package)."""
    tf.summary.write(tag, tf.cast(value, tf.float32), step=step, metadata=_SCALAR)
