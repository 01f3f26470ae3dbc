"""`GateMonitor`: the open fraction, consensus and polarization of channel gates, per epoch; `gate_consensus`."""

import os

import keras
import numpy as np
import tensorflow as tf

from tfsparse.callbacks.pruning_summaries import write_scalar
from tfsparse.layers.gate import gate_sets

POLARIZED = (0.1, 0.9)


def gate_statistics(model):
    """Returns `{"gates_open", "gates_polarized", "gates_consensus"}` of a gated model, and `"blocks_open"`.

    - `gates_open`: fraction of the channel gates open at inference (what
      `strip` keeps).
    - `blocks_open`: with block gates only, the fraction of them open at
      inference.
    - `gates_polarized`: fraction of gate probabilities (channels and blocks)
      outside (0.1, 0.9).
    - `gates_consensus`: for dynamic gates, the fraction of gates whose
      decision was the same for every example of the last training batch
      (mean over the gated layers); 1.0 for static gates. Over a whole
      dataset, see `gate_consensus`.

    Raises:
        ValueError: if `model` holds no gates.

    Example:

    >>> gate_statistics(tfsparse.polarize(model, sparsity=0.5, steps=10))
    {'gates_open': 1.0, 'gates_polarized': 0.0, 'gates_consensus': 1.0}
    """
    sets = gate_sets(model)
    if not sets:
        raise ValueError(f"Model {model.name!r} holds no channel gates; make it with `tfsparse.polarize`.")
    opened, blocks, probabilities, agreement = [], [], [], []
    for leader, members in sets.values():
        opened.append(keras.ops.convert_to_numpy(leader.open_gates()))
        probabilities.append(keras.ops.convert_to_numpy(leader.probabilities()))
        if leader.has_blocks:
            blocks.append(keras.ops.convert_to_numpy(leader.open_blocks()))
            probabilities.append(keras.ops.convert_to_numpy(keras.ops.sigmoid(leader.scaled_block_logits())))
        agreement += [float(layer.agreement.numpy()) for layer in members if getattr(layer, "dynamic", False)]
    p = np.concatenate(probabilities)
    statistics = {
        "gates_open": float(np.mean(np.concatenate(opened))),
        "gates_polarized": float(np.mean((p <= POLARIZED[0]) | (p >= POLARIZED[1]))),
        "gates_consensus": float(np.mean(agreement)) if agreement else 1.0,
    }
    if blocks:
        statistics["blocks_open"] = float(np.mean(np.concatenate(blocks)))
    return statistics


def gate_consensus(model, data):
    """Returns the fraction of input-dependent gates whose decision is the same for every example of `data`.

    The consensus goal of dynamic gates (`tfsparse.polarize(...,
    dynamic=True)`): each gated input channel of a consumer decides per
    example from the static logit plus its learned input-dependent term, as
    in training (inputs standardized over each batch), whether or not the
    decisions are fixed already; a gate agrees when it is open for every
    example of `data`, or closed for every one. Inference and `strip` use
    the static decisions, so this measures how far the learned dynamic term
    still disagrees with them, not the outputs.

    Args:
        model: a gated model with dynamic gates (functional or Sequential).
        data: an iterable of batches, `x` or `(x, y, ...)` (e.g. the test
            set as a `tf.data.Dataset`), of at least 2 examples each.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: if `model` holds no dynamic gates or `data` no batch.

    Example:

    >>> gated = tfsparse.polarize(model, sparsity=0.5, steps=10, dynamic=True)
    >>> gate_consensus(gated, [x[:32], x[32:64]])  # the input-dependent term starts at zero
    1.0
    """
    layers = [layer for _, members in gate_sets(model).values() for layer in members
              if getattr(layer, "dynamic", False)]
    if not layers:
        raise ValueError(
            f"Model {model.name!r} holds no input-dependent gates; make it with `tfsparse.polarize(..., dynamic=True)`.")
    probe = keras.Model(model.input, [layer.input for layer in layers])
    always_open = always_closed = None
    for batch in data:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        opened = np.concatenate([np.asarray(layer.dynamic_logits(layer.leader(), inputs)[0]) > 0
                                 for layer, inputs in zip(layers, keras.tree.flatten(probe(x, training=False)))],
                                axis=1)
        batch_open, batch_closed = opened.all(axis=0), (~opened).all(axis=0)
        always_open = batch_open if always_open is None else always_open & batch_open
        always_closed = batch_closed if always_closed is None else always_closed & batch_closed
    if always_open is None:
        raise ValueError("Argument `data` holds no batch.")
    return float(np.mean(always_open | always_closed))


@keras.saving.register_keras_serializable(package="tfsparse")
class GateMonitor(keras.callbacks.Callback):
    """Logs the state of the channel gates at the end of every epoch.

    Adds `gates_open`, `gates_polarized` and `gates_consensus` (and
    `blocks_open` with block gates; see `gate_statistics`) to the epoch's logs, so the progress bar and the
    `History` show them, and, given a `log_dir`, writes them as TensorBoard
    scalars `gates/<name>` with the epoch as step. No per-batch hook.

    Args:
        log_dir: directory of the event files (created if missing), or None
            for the logs only.

    Raises:
        TypeError: if `log_dir` is not a path or None.
        ValueError: at the start of `fit` if the model holds no gates.

    Example:

    Use it as `gated.fit(data, epochs=..., callbacks=[GateMonitor(log_dir)])`;
    at the end of each epoch, `fit` calls:

    >>> monitor, logs = GateMonitor(), {"loss": 2.3}
    >>> monitor.set_model(tfsparse.polarize(model, sparsity=0.5, steps=8))
    >>> monitor.on_epoch_end(0, logs)
    >>> sorted(logs)
    ['gates_consensus', 'gates_open', 'gates_polarized', 'loss']
    """

    def __init__(self, log_dir=None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(
                f"Argument `log_dir` must be a path (str or os.PathLike) or None, received: "
                f"{log_dir!r} (of type {type(log_dir).__name__})."
            )
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        gate_statistics(self.model)  # raises early if there are no gates
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        statistics = gate_statistics(self.model)
        if logs is not None:
            logs.update(statistics)
        if self._writer is not None:
            with self._writer.as_default():
                for name, value in statistics.items():
                    write_scalar(f"gates/{name.removeprefix('gates_')}", value, epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        return {"log_dir": self.log_dir}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
