"""The main job: train, prune on a schedule with `model.fit` (or `tfsparse.distribute.train`), export to TFLite."""

import contextlib

import keras
import matplotlib
import tensorflow as tf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import distribute, export, schedules  # noqa: E402
from tfsparse.jobs import common  # noqa: E402
from tfsparse.methods import prune_low_magnitude  # noqa: E402
from tfsparse.model_summary import summary  # noqa: E402
from tfsparse.surgery import strip  # noqa: E402

HELP = "train a model, prune it with model.fit, export it to TFLite and compare"


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=15)
    parser.add_argument("--sparsity", type=float, default=0.9, help="final sparsity of the pruned model")
    parser.add_argument("--scope", default="layer", choices=("layer", "global"),
                        help="one magnitude threshold per layer (TFMOT's rule) or across layers")
    parser.add_argument("--strategy", default="none", choices=STRATEGIES,
                        help="train with model.fit (none), or with tfsparse.distribute.train under MirroredStrategy "
                             "(this host's devices) or MultiWorkerMirroredStrategy (the cluster in TF_CONFIG; run "
                             "the same command on every worker); --batch-size is the global batch")


STRATEGIES = ("none", "mirrored", "multiworker")


class _SparsityHistory(keras.callbacks.Callback):
    """Records the model's measured weight sparsity at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.sparsity = []

    def on_epoch_end(self, epoch, logs=None):
        self.sparsity.append(summary(self.model, print_fn=None).total["sparsity"])


def run(args):
    if not 0.0 <= args.sparsity < 1.0:
        raise SystemExit(f"--sparsity must be in [0, 1), received: {args.sparsity}.")
    strategy = _strategy(args.strategy)  # before any TensorFlow op: collectives are configured at startup
    out = common.output_dir(args)
    train, test, shape, classes = common.load_data(args)

    fit = _fit if strategy is None else _distributed_fit(strategy)
    if strategy is not None:
        train = train.unbatch().batch(args.batch_size, drop_remainder=True)
    scope = contextlib.nullcontext if strategy is None else strategy.scope

    print(f"\n1/3 Training dense {args.model} on {args.data} for {args.epochs} epochs")
    with scope():
        dense = common.compile_model(common.build_model(args, shape, classes))
    dense_history = fit(dense, train, test, args.epochs, [])

    steps = sum(1 for _ in train) * args.epochs
    schedule = schedules.PolynomialDecay(0.0, args.sparsity, begin_step=0, end_step=int(steps * 0.6),
                                         frequency=max(1, steps // (4 * args.epochs)))
    print(f"\n2/3 Pruning to {args.sparsity:.0%} ({args.scope} scope) while fine-tuning for {args.epochs} epochs")
    with scope():
        pruned = common.compile_model(prune_low_magnitude(dense, schedule, scope=args.scope))
    record = _SparsityHistory()
    pruned_history = fit(pruned, train, test, args.epochs, [record])
    if strategy is not None:
        if not distribute.is_chief(strategy):
            return None  # the chief exports and reports
        dense, pruned = _local_copy(dense), _local_copy(pruned)

    print("\n3/3 Exporting to TFLite and checking with LiteRT")
    samples = next(iter(test))[0][:16]
    reports = {
        "dense": export.tflite(dense, out / "dense.tflite", sparse=False, sample_inputs=samples),
        "pruned": export.tflite(pruned, out / "pruned.tflite", sparse=True, sample_inputs=samples),
    }
    plain = common.compile_model(strip(pruned))
    rows = []
    for name, model in (("dense", dense), ("pruned", plain)):
        totals = summary(model, print_fn=None).total
        rows.append({
            "model": name,
            "test accuracy": common.accuracy(model, test),
            "sparsity": totals["sparsity"],
            "parameters": totals["parameters"],
            "non-zeros": totals["nonzeros"],
            "TFLite bytes": reports[name].bytes,
            "LiteRT max |diff|": reports[name].max_abs_diff,
        })
    print("\nSparsity counts all parameters (biases stay dense); LiteRT is compared with Keras on test images.")
    common.print_table(rows, list(rows[0]), percent=("test accuracy", "sparsity"))
    plot = _plot(dense_history.history, pruned_history.history, record.sparsity, out / "training.png")
    print(f"\nWrote {plot}, {reports['dense'].path} and {reports['pruned'].path}")
    return rows


def _strategy(name):
    """The `tf.distribute` strategy named by --strategy, or None for plain `model.fit`."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return None


def _fit(model, train, test, epochs, callbacks):
    return model.fit(train, validation_data=test, epochs=epochs, verbose=common.fit_verbosity(), callbacks=callbacks)


def _distributed_fit(strategy):
    """`fit(model, train, test, epochs, callbacks)` with `tfsparse.distribute.train` under `strategy`."""
    def fit(model, train, test, epochs, callbacks):
        return distribute.train(model, train, epochs=epochs, strategy=strategy,
                                callbacks=[_TestAccuracy(test), *callbacks])
    return fit


class _TestAccuracy(keras.callbacks.Callback):
    """Adds `val_accuracy` on `test` to the logs of each epoch (direct calls, which every strategy allows)."""

    def __init__(self, test):
        super().__init__()
        self.test = test

    def on_epoch_end(self, epoch, logs=None):
        right = total = 0
        for x, y in self.test:
            predicted = keras.ops.argmax(self.model(x, training=False), axis=-1)
            right += int(keras.ops.sum(keras.ops.cast(predicted == keras.ops.cast(y, predicted.dtype), "int32")))
            total += int(y.shape[0])
        logs["val_accuracy"] = right / total


def _local_copy(model):
    """A copy of a model trained under a strategy, with plain variables, compiled, for export and evaluation."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return common.compile_model(copy)


def _plot(dense, pruned, sparsity, path):
    epochs = len(dense["val_accuracy"])
    x_dense = list(range(1, epochs + 1))
    x_pruned = list(range(epochs + 1, epochs + len(pruned["val_accuracy"]) + 1))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x_dense, dense["val_accuracy"], "o-", label="dense: test accuracy")
    ax.plot(x_pruned, pruned["val_accuracy"], "o-", label="pruned: test accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    ax2.plot(x_pruned, sparsity, "s--", color="grey", label="weight sparsity")
    ax2.set_ylabel("sparsity")
    ax2.set_ylim(0, 1)
    ax.axvline(epochs + 0.5, color="black", lw=0.5)
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower left")
    ax.set_title("Dense training, then magnitude pruning with model.fit")
    return common.save_figure(fig, path)
