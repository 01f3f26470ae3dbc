"""Lottery Jackpots on Fashion-MNIST: a mask search over frozen pre-trained weights.

Each model is pre-trained dense (Adam, lr 1e-3, batch 128) on 50,000 of the
60,000 training images, then, at each sparsity, with the same epoch budget and
the same batches in the same order:

(a) magnitude pruning, no retraining (one global threshold, classifier dense);
(b) (a) + fine-tuning of all weights with the mask fixed (SGD momentum 0.9,
    cosine lr from 0.01);
(c) Lottery Jackpot, random score init, short restriction;
(d) Lottery Jackpot, magnitude init, short restriction;
(e) (d) without short restriction (plain top-k re-ranking of the scores).

The goals recorded per sparsity include whether the search (d) ends above
magnitude pruning without retraining (a), the claim the `jackpot` job's
table shows on the embedded digits.

The searches use the reference recipe (`tfsparse.optimizers.cosine_sgd`: SGD
momentum 0.9, cosine lr; weight decay 5e-4 on the scores). Each method's
initial learning rate is chosen from a small grid (`--search-lrs` for (c)-(e),
`--finetune-lrs` for (b)) by accuracy on the 10,000 held-out training images
at the end of the budget, so that every method is compared at its own best
setting; test accuracy (full 10k test set) is measured `--evals-per-epoch`
times per epoch. BatchNormalization uses momentum 0.9 (PyTorch's default 0.1,
as in the reference) in pre-training and in every method.

    python benchmarks/jackpot.py [--models lenet5_caffe vgg] [--sparsities 0.9 0.95] [--epochs 1]
                                 [--pretrain-epochs 5] [--evals-per-epoch 6] [--cache DIR]

Writes benchmarks/results/jackpot_<models>[_<epochs>epochs].json and .png.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import RESULTS, VGG_CONFIG, machine, write_json  # noqa: E402

BATCH = 128
TRAIN_EXAMPLES = 50000
# PyTorch's default BatchNorm momentum 0.1 (the reference code's), in Keras terms.
BN_MOMENTUM = 0.9
MODELS = {
    "lenet5_caffe": lambda: ts.models.lenet5_caffe((28, 28, 1)),
    "vgg": lambda: ts.models.vgg(VGG_CONFIG, (28, 28, 1), name="vgg_16_32_64"),
}
PRETRAIN_LR = 1e-3
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
METHODS = {
    "b": "magnitude + fine-tuning",
    "c": "jackpot, random init",
    "d": "jackpot, magnitude init",
    "e": "jackpot, magnitude init, no short restriction",
}


def with_bn_momentum(model, momentum=BN_MOMENTUM):
    """Sets the moving-statistics momentum of `model`'s BatchNormalization layers."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def datasets():
    """(train, steps per epoch, validation, test): 50k/10k of the training set, seeded split."""
    images, labels = next(iter(ts.data.load("fashion_mnist", "train", 60000, shuffle=False)))
    order = np.random.default_rng(0).permutation(len(labels))
    train_idx, val_idx = order[:TRAIN_EXAMPLES], order[TRAIN_EXAMPLES:]
    images, labels = images.numpy(), labels.numpy()
    train = (tf.data.Dataset.from_tensor_slices((images[train_idx], labels[train_idx]))
             .shuffle(TRAIN_EXAMPLES, seed=0, reshuffle_each_iteration=True).repeat().batch(BATCH)
             .prefetch(tf.data.AUTOTUNE))
    validation = tf.data.Dataset.from_tensor_slices((images[val_idx], labels[val_idx])).batch(1000)
    test = ts.data.load("fashion_mnist", "test", 1000)
    return train, TRAIN_EXAMPLES // BATCH, validation, test


def compiled(model, optimizer):
    model.compile(optimizer, LOSS, metrics=["accuracy"])
    return model


def accuracy(model, test):
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def pretrained(name, args, train, steps):
    """The dense model, pre-trained (or loaded from `args.cache`)."""
    keras.utils.set_random_seed(0)
    dense = with_bn_momentum(MODELS[name]())
    path = args.cache and os.path.join(args.cache, f"jackpot_{name}_{args.pretrain_epochs}epochs.weights.h5")
    if path and os.path.exists(path):
        dense.load_weights(path)  # before compiling: the file's optimizer state is not needed
        return compiled(dense, keras.optimizers.Adam(PRETRAIN_LR)), None
    compiled(dense, keras.optimizers.Adam(PRETRAIN_LR))
    began = time.perf_counter()
    dense.fit(train, steps_per_epoch=steps, epochs=args.pretrain_epochs, verbose=0)
    seconds = time.perf_counter() - began
    if path:
        os.makedirs(args.cache, exist_ok=True)
        dense.save_weights(path)
    return dense, seconds


def curve(model, train, test, steps_per_epoch, epochs, evals, callbacks=()):
    """Trains for `epochs` epochs; returns test accuracy at 0 and after every 1/evals epoch."""
    start = accuracy(model, test)
    chunk = steps_per_epoch // evals
    began = time.perf_counter()
    history = model.fit(train, steps_per_epoch=chunk, epochs=epochs * evals, validation_data=test,
                        callbacks=list(callbacks), verbose=0)
    seconds = time.perf_counter() - began
    return [start] + [float(a) for a in history.history["val_accuracy"]], seconds


def magnitude_pruned(dense, search):
    """`dense` with fixed `Masked` masks equal to the magnitude init of `search`."""
    masks = {layer.layer.name: layer.initial_masks() for layer in search.layers if isinstance(layer, ts.layers.Scored)}

    def wrap(layer):
        if layer.name in masks:
            return ts.layers.Masked(ts.surgery.copy_layer(layer))
        return ts.surgery.copy_layer(layer)

    pruned = ts.surgery.transform_layers(dense, wrap)
    for layer in pruned.layers:
        if isinstance(layer, ts.layers.Masked):
            layer.set_masks(masks[layer.layer.name])
    return pruned


def kernels_bit_identical(search, dense):
    """True if every non-zero kernel entry of the stripped search equals the pre-trained one."""
    plain = ts.strip_pruning(search)
    for before, after in zip(dense.layers, plain.layers):
        for a, b in zip(before.get_weights(), after.get_weights()):
            kept = b != 0
            if a.ndim > 1 and a[kept].tobytes() != b[kept].tobytes():
                return False
    return True


def tuned(build, learning_rates, data, args):
    """Runs `build(lr) -> (model, callbacks)` for each lr; keeps the best on validation data.

    Returns (record of the chosen run with the whole grid, chosen model).
    """
    train, steps, validation, test = data
    grid, best, best_model = {}, None, None
    for lr in learning_rates:
        keras.utils.set_random_seed(1)
        model, callbacks = build(lr)
        accuracies, seconds = curve(model, train, test, steps, args.epochs, args.evals_per_epoch, callbacks)
        grid[lr] = {"validation_accuracy": accuracy(model, validation), "accuracy": accuracies, "seconds": seconds}
        if best is None or grid[lr]["validation_accuracy"] > grid[best]["validation_accuracy"]:
            best, best_model = lr, model
    record = {"learning_rate": best, **grid[best],
              "grid": {str(lr): {"validation_accuracy": r["validation_accuracy"], "accuracy": r["accuracy"]}
                       for lr, r in grid.items()}}
    return record, best_model


def run_model(name, args, data, progress):
    train, steps, _, test = data
    dense, pretrain_seconds = pretrained(name, args, train, steps)
    result = {"dense_accuracy": accuracy(dense, test), "pretrain_seconds": pretrain_seconds,
              "parameters": dense.count_params(), "sparsities": {}}
    progress.add(1)
    total_steps = steps // args.evals_per_epoch * args.evals_per_epoch * args.epochs
    for sparsity in args.sparsities:
        runs, searches = {}, {}
        for key, init, restricted in (("c", "random", True), ("d", "magnitude", True), ("e", "magnitude", False)):
            def search(lr, init=init, restricted=restricted):
                model = compiled(ts.lottery_jackpot(dense, sparsity, init=init, seed=0),
                                 ts.optimizers.cosine_sgd(total_steps, learning_rate=lr))
                return model, [ts.callbacks.ShortRestriction()] if restricted else []

            runs[key], searches[key] = tuned(search, args.search_lrs, data, args)
            progress.add(1)

        def fine_tune(lr):
            optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(lr, total_steps), momentum=0.9)
            return compiled(magnitude_pruned(dense, searches["d"]), optimizer), []

        runs["b"], _ = tuned(fine_tune, args.finetune_lrs, data, args)
        progress.add(1)
        d = searches["d"]
        kept = {layer.layer.name: int(np.sum(layer.masks[0].numpy())) for layer in d.layers
                if isinstance(layer, ts.layers.Scored)}
        result["sparsities"][str(sparsity)] = {
            "a_accuracy": runs["b"]["accuracy"][0],
            "runs": runs,
            "d_kernels_bit_identical": kernels_bit_identical(d, dense),
            "d_kept_per_layer": kept,
            "d_hamming_from_init": {layer.layer.name: layer.summary_fields()["hamming"] for layer in d.layers
                                    if isinstance(layer, ts.layers.Scored)},
        }
    return result


def epochs_to_reach(curve, target, evals):
    """First evaluation point (in epochs) where `curve` reaches `target`, or None."""
    return next((i / evals for i, a in enumerate(curve) if a >= target), None)


def goals(result, epochs, evals):
    """The issue's goals, measured: each method at its own chosen lr, and (c) vs (d) at equal lrs."""
    out = {}
    dense = result["dense_accuracy"]
    for sparsity, r in result["sparsities"].items():
        final = {k: run["accuracy"][-1] for k, run in r["runs"].items()}
        reach = epochs_to_reach(r["runs"]["d"]["accuracy"], final["c"], evals)
        equal_lr = {}
        for lr, c in r["runs"]["c"]["grid"].items():
            at = epochs_to_reach(r["runs"]["d"]["grid"][lr]["accuracy"], c["accuracy"][-1], evals)
            equal_lr[lr] = {"c_final": c["accuracy"][-1], "d_final": r["runs"]["d"]["grid"][lr]["accuracy"][-1],
                            "d_epochs_to_reach_c_final": at, "within_a_third": at is not None and at <= epochs / 3}
        out[sparsity] = {
            "d_minus_dense_points": 100 * (final["d"] - dense),
            "d_minus_a_points": 100 * (final["d"] - r["a_accuracy"]),
            "d_beats_a": final["d"] > r["a_accuracy"],
            "d_within_1_point_of_dense_and_bit_identical": final["d"] >= dense - 0.01 and r["d_kernels_bit_identical"],
            "d_epochs_to_reach_c_final": reach,
            "d_reaches_c_final_in_a_third_of_the_epochs": reach is not None and reach <= epochs / 3,
            "at_equal_learning_rates": equal_lr,
            "d_minus_e_points": 100 * (final["d"] - final["e"]),
            "d_minus_b_points": 100 * (final["d"] - final["b"]),
            "d_at_least_e_and_b": final["d"] >= final["e"] and final["d"] >= final["b"],
        }
    return out


def plot(results, args, path):
    sparsities = [str(s) for s in args.sparsities]
    fig, axes = plt.subplots(len(results), len(sparsities), figsize=(5.5 * len(sparsities), 4 * len(results)),
                             squeeze=False)
    points = [i / args.evals_per_epoch for i in range(args.epochs * args.evals_per_epoch + 1)]
    for row, (name, result) in zip(axes, results.items()):
        for ax, sparsity in zip(row, sparsities):
            r = result["sparsities"][sparsity]
            for key, style in (("b", "s--"), ("c", "^-"), ("d", "o-"), ("e", "x:")):
                run = r["runs"][key]
                ax.plot(points, run["accuracy"], style, label=f"({key}) {METHODS[key]}, lr {run['learning_rate']:g}")
            ax.axhline(result["dense_accuracy"], color="black", lw=0.8, label="dense")
            ax.axhline(r["a_accuracy"], color="grey", lw=0.8, ls="--", label="(a) magnitude, no retraining")
            ax.set_title(f"{name}, sparsity {sparsity}")
            ax.set_xlabel("search / fine-tuning epochs")
            ax.set_ylabel("test accuracy")
            low = min(min(run["accuracy"][1:]) for run in r["runs"].values())
            ax.set_ylim(max(0.0, min(low, r["a_accuracy"]) - 0.02), result["dense_accuracy"] + 0.02)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(MODELS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95])
    parser.add_argument("--epochs", type=int, default=1, help="search / fine-tuning epochs (the budget)")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--evals-per-epoch", type=int, default=6)
    parser.add_argument("--search-lrs", nargs="+", type=float, default=[0.1, 0.3, 1.0],
                        help="initial learning rates tried for (c), (d), (e); the reference uses 0.1")
    parser.add_argument("--finetune-lrs", nargs="+", type=float, default=[0.01, 0.03, 0.1],
                        help="initial learning rates tried for (b)")
    parser.add_argument("--cache", help="directory to keep pre-trained weights in and reuse them from")
    args = parser.parse_args()
    data = datasets()
    steps = data[1]
    progress = keras.utils.Progbar(len(args.models) * (1 + 4 * len(args.sparsities)), unit_name="run")
    began = time.perf_counter()
    results = {name: run_model(name, args, data, progress) for name in args.models}
    for result in results.values():
        result["goals"] = goals(result, args.epochs, args.evals_per_epoch)
    payload = {
        "recipe": {
            "data": f"fashion_mnist: {TRAIN_EXAMPLES} training images ({steps} steps of {BATCH} per epoch), the "
                    f"other {60000 - TRAIN_EXAMPLES} held out to choose each method's learning rate; full 10k test "
                    f"set for every reported accuracy",
            "pretrain": f"Adam lr {PRETRAIN_LR}, {args.pretrain_epochs} epochs; BatchNormalization momentum "
                        f"{BN_MOMENTUM} everywhere",
            "budget_epochs": args.epochs,
            "evaluations_per_epoch": args.evals_per_epoch,
            "a": "global magnitude threshold over the pruned kernels, classifier dense, no retraining",
            "b": f"(a)'s mask fixed, all weights trained: SGD momentum 0.9, cosine lr from one of "
                 f"{args.finetune_lrs} (best on the held-out images)",
            "c_d_e": f"tfsparse.lottery_jackpot (weight decay 5e-4 on the scores) + tfsparse.optimizers.cosine_sgd "
                     f"(SGD momentum 0.9, cosine lr per step from one of {args.search_lrs}, best on the held-out "
                     f"images); (c), (d) with tfsparse.callbacks.ShortRestriction(rate=1.0)",
            "models": {"lenet5_caffe": "LeNet-5-Caffe", "vgg": f"VGG-style, conv config {list(VGG_CONFIG)}, BN, "
                       "global average pooling, Dense classifier"},
        },
        "machine": {**machine(), "note": "2 CPU cores shared with other jobs while measuring; times are indicative"},
        "seconds": time.perf_counter() - began,
        "results": results,
    }
    name = "jackpot_" + "_".join(args.models) + ("" if args.epochs == 1 else f"_{args.epochs}epochs")
    path = write_json(name, payload)
    plot(results, args, RESULTS / f"{name}.png")
    for name, result in results.items():
        print(f"\n{name}: dense {result['dense_accuracy']:.4f}")
        for sparsity, r in result["sparsities"].items():
            finals = "  ".join(f"({k}) {run['accuracy'][-1]:.4f} (lr {run['learning_rate']:g})"
                               for k, run in sorted(r["runs"].items()))
            print(f"  sparsity {sparsity}: (a) {r['a_accuracy']:.4f}  {finals}")
            print(f"    goals: {result['goals'][sparsity]}")
    print("wrote", path)


if __name__ == "__main__":
    main()
