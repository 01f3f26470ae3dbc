"""Accuracy of magnitude pruning: tfsparse (Keras 3) vs TFMOT (tf-keras), one recipe.

Both libraries train the same architecture from the same initial weights on the
same Fashion-MNIST batches in the same order: Adam (lr 1e-3), batch 128,
PolynomialDecay from 0 to the target sparsity over the first two thirds of
training, masks recomputed every 100 steps. tfsparse also runs with
`scope="global"` (one threshold across layers). Extreme sparsity leaves a few
weights in small layers, so single runs are noisy: each configuration runs with
several initial-weight seeds and the means are compared.

    python benchmarks/accuracy_vs_tfmot.py [--epochs 10] [--seeds 0 1 2] [--models lenet_300_100 lenet5_caffe]

Writes benchmarks/results/accuracy_vs_tfmot_<models>.json and .png.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import ARCHITECTURES, RESULTS, machine, tf_keras, write_json  # noqa: E402

SPARSITIES = (0.5, 0.9, 0.95, 0.99)
BATCH = 128
LEARNING_RATE = 1e-3


def datasets():
    train = ts.data.load("fashion_mnist", "train", BATCH, shuffle=True, seed=0)
    test = ts.data.load("fashion_mnist", "test", 1000)
    return train, test


def run_tfsparse(arch, weights, schedule_args, train, test, epochs, scope):
    model = ARCHITECTURES[arch](keras)
    model.set_weights(weights)
    pruned = ts.prune_low_magnitude(model, ts.schedules.PolynomialDecay(*schedule_args), scope=scope)
    pruned.compile(keras.optimizers.Adam(LEARNING_RATE),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    pruned.fit(train, epochs=epochs, verbose=0)
    accuracy = pruned.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    return float(accuracy), _kernel_sparsity(ts.strip(pruned))


def run_tfmot(arch, weights, schedule_args, train, test, epochs):
    tfk, tfmot = tf_keras()
    model = ARCHITECTURES[arch](tfk)
    model.set_weights(weights)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(*schedule_args))
    pruned.compile(tfk.optimizers.Adam(LEARNING_RATE),
                   tfk.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    pruned.fit(train, epochs=epochs, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    accuracy = pruned.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    return float(accuracy), _kernel_sparsity(tfmot.sparsity.keras.strip_pruning(pruned))


def _kernel_sparsity(model):
    kernels = [w for layer in model.layers for w in layer.get_weights() if w.ndim > 1]
    zeros = sum(int((w == 0).sum()) for w in kernels)
    return zeros / sum(w.size for w in kernels)


def run_dense(arch, weights, train, test, epochs):
    model = ARCHITECTURES[arch](keras)
    model.set_weights(weights)
    model.compile(keras.optimizers.Adam(LEARNING_RATE),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(train, epochs=epochs, verbose=0)
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5_caffe"], choices=sorted(ARCHITECTURES))
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    train, test = datasets()
    steps = sum(1 for _ in train) * args.epochs
    schedule_args = (0.0, None, 0, int(steps * 2 / 3), 3, 100)
    results = {}
    runs_per_seed = 1 + 3 * len(args.sparsities)
    progress = keras.utils.Progbar(len(args.models) * len(args.seeds) * runs_per_seed, unit_name="run")
    for arch in args.models:
        runs = {}
        for seed in args.seeds:
            keras.utils.set_random_seed(seed)
            weights = ARCHITECTURES[arch](keras).get_weights()
            runs.setdefault("dense", []).append({"accuracy": run_dense(arch, weights, train, test, args.epochs)})
            progress.add(1)
            for s in args.sparsities:
                sched = (schedule_args[0], s, *schedule_args[2:])
                for name, fn in (
                    ("tfsparse", lambda: run_tfsparse(arch, weights, sched, train, test, args.epochs, "layer")),
                    ("tfsparse_global", lambda: run_tfsparse(arch, weights, sched, train, test, args.epochs, "global")),
                    ("tfmot", lambda: run_tfmot(arch, weights, sched, train, test, args.epochs)),
                ):
                    start = time.perf_counter()
                    accuracy, sparsity = fn()
                    runs.setdefault(f"{name}@{s}", []).append(
                        {"seed": seed, "accuracy": accuracy, "kernel_sparsity": sparsity,
                         "seconds": time.perf_counter() - start})
                    progress.add(1)
        results[arch] = {key: {"mean_accuracy": statistics.mean(r["accuracy"] for r in values), "runs": values}
                         for key, values in runs.items()}
    payload = {
        "recipe": {"data": "fashion_mnist (60k train, 10k test)", "epochs": args.epochs, "batch_size": BATCH,
                   "optimizer": f"Adam lr {LEARNING_RATE}", "schedule": "PolynomialDecay 0 -> s, power 3, "
                   "over the first 2/3 of the steps, frequency 100", "init": "identical weights for the runs of one seed",
                   "seeds": args.seeds},
        "machine": machine(),
        "results": results,
    }
    name = "accuracy_vs_tfmot_" + "_".join(args.models)
    path = write_json(name, payload)
    _plot(results, args.sparsities, RESULTS / f"{name}.png")
    for arch, runs in results.items():
        print(f"\n{arch}: dense {runs['dense']['mean_accuracy']:.4f} (means over seeds {args.seeds})")
        for s in args.sparsities:
            a, g, t = (runs[f"{n}@{s}"]["mean_accuracy"] for n in ("tfsparse", "tfsparse_global", "tfmot"))
            print(f"  sparsity {s}: tfsparse {a:.4f}  tfsparse global {g:.4f}  TFMOT {t:.4f}  (tfsparse - TFMOT: {100 * (a - t):+.2f} points)")
    print("wrote", path)


def _plot(results, sparsities, path):
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (arch, runs) in zip(axes[0], results.items()):
        for name, style in (("tfsparse", "o-"), ("tfsparse_global", "s-"), ("tfmot", "^--")):
            ax.plot([str(s) for s in sparsities], [runs[f"{name}@{s}"]["mean_accuracy"] for s in sparsities],
                    style, label=name)
        ax.axhline(runs["dense"]["mean_accuracy"], color="grey", lw=0.8, label="dense")
        ax.set_title(f"{arch} on Fashion-MNIST")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
