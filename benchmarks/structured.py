"""Structured pruning on Fashion-MNIST: channel criteria against the dense model and the same widths from scratch.

Every model trains with one recipe, `tfsparse.finetune` (SGD, Nesterov
momentum 0.9, cosine learning rate, weight decay 5e-4, BatchNorm moving
statistics recomputed over 50 training batches at the end), on the same
fixed random subset of `--train-examples` training images (batch 128), and
is evaluated on the full 10,000-image test set:

- dense: trained `--epochs` (lr 0.1): the model every method prunes;
- dense, same total: trained `--epochs + --finetune-epochs` (lr 0.1): the
  reference a pruned model must come close to;
- each method at each ratio: removes that fraction of the channels of the
  pruned dense model (`tfsparse.prune_channels`, criterion and scope per
  method), recomputes BatchNorm statistics (the "before fine-tuning"
  figure), and fine-tunes `--finetune-epochs` (`--finetune-lr`, 0.01);
- from scratch (`--scratch`): each pruned architecture re-initialized
  (`tfsparse.reinitialize`) and trained `--epochs + --finetune-epochs`
  (lr 0.1): Liu et al. (2019)'s contrast, at equal total epochs.

Each row records accuracy, parameters and FLOPs (`tfsparse.summary`) and
LiteRT batch-1 latency (`tfsparse.export.tflite`, median of 20 runs, one
thread); the goals of the structured core are checked on the 50% rows.
The structured methods built on the core are rows of the same table:
`hap+implants/params` and `hap/params` (`tfsparse.hap`, the ratio counted
in parameters, with and without implants, against `l1/params` and
`taylor/params`; `/layer-trace`: one trace per layer),
`l1/global+distillation` (fine-tuned with knowledge distillation from the
dense model), `csgd/layer` (C-SGD from the dense model for the
fine-tuning epochs, then the exact trim; `csgd/scratch`: from a fresh
model for all the epochs; `csgd/widen-late`: from a fresh 1.25x wider
model, the pull from half the steps on),
`polarization` (gates trained
from a fresh model for the same total epochs, then stripped; `/dynamic`
with input-dependent gates, their consensus measured on the test set;
`/blocks` also closing a third of the residual blocks) and
`slimming` (network slimming, Liu et al., 2017: the dense model trained
with an L1 penalty on BatchNorm gamma, pruned globally by |gamma|,
fine-tuned).

    python benchmarks/structured.py [--models resnet20 vgg] [--methods l1/global bn_scale/layer ...]
        [--ratios 0.3 0.5 0.7] [--epochs 6] [--finetune-epochs 3] [--finetune-lr 0.01]
        [--train-examples 10000] [--seeds 0] [--scratch] [--cache DIR] [--output NAME] [--skip-dense]

Writes benchmarks/results/structured_<models>.json (or NAME.json) after every row (an
interrupted run keeps what it measured) and the plot at the end. With
`--cache DIR`, the dense models are trained once and reused by later runs.
"""

import argparse
import dataclasses
import os
import tempfile
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
TRAIN_LR = 0.1
MODELS = {
    "resnet20": lambda width=1.0: ts.models.resnet20((28, 28, 1), width=width),
    "vgg": lambda: ts.models.vgg(VGG_CONFIG, (28, 28, 1), name="vgg_16_32_64"),
}


@dataclasses.dataclass
class Context:
    """What a method needs: the data, the trained dense weights and the epoch budget."""

    name: str
    train: tf.data.Dataset
    test: tf.data.Dataset
    dense: keras.Model
    build: object
    epochs: int
    finetune_epochs: int
    finetune_lr: float
    seed: int


def criterion_method(importance, scope, target="channels", max_layer_ratio=0.9, distilled=False):
    """A method: `prune_channels` with one criterion and scope, then the fine-tuning recipe.

    `distilled`: fine-tuned with knowledge distillation from the dense model it was pruned from.
    """

    def run(context, ratio):
        pruned = ts.prune_channels(context.dense, ratio, importance=importance, data=context.train, scope=scope,
                                   target=target, max_layer_ratio=max_layer_ratio, print_fn=None)
        return pruned, fine_tuned(pruned, context, teacher=context.dense if distilled else None)

    return run


def hap_method(implant_fraction, samples=32, batches=4, per="channel"):
    """A method: `tfsparse.hap` (that fraction of the parameters removed, implants counted), then fine-tuning.

    `per`: traces per channel (HAP's) or per layer (`tfsparse.scoring.HessianTrace`).
    """

    def run(context, ratio):
        pruned = ts.hap(context.dense, ratio, context.train, implant_fraction=implant_fraction, samples=samples,
                        batches=batches, target="params", seed=context.seed, per=per, verbose=0, print_fn=None)
        implanted = sum(layer.filters for layer in pruned.layers if layer.name.endswith("_implant"))
        return pruned, {**fine_tuned(pruned, context), "implanted_channels": implanted}

    return run


def csgd_method(from_scratch=False, pull=(0.0, 0.75), width=1.0):
    """A method: C-SGD, then the exact trim, no fine-tuning.

    From the trained dense model for the fine-tuning epochs (at the
    fine-tuning rate), or `from_scratch`: from a fresh model for all the
    epochs (at the training rate), "train wide, then squeeze". `pull`: when
    the pull starts and by when the clusters meet (`csgd_prune`); `width`
    > 1 (from scratch only): the fresh model is that much wider
    (`tfsparse.csgd.widen`) and trimmed to the widths of `1 - ratio`.
    """

    def run(context, ratio):
        keras.utils.set_random_seed(context.seed)
        plan = ratio
        if width != 1.0:
            model, plan = ts.csgd.widen(context.build, width, 1 - ratio, seed=context.seed)
            epochs, rate = context.epochs + context.finetune_epochs, TRAIN_LR
        elif from_scratch:
            model, epochs, rate = context.build(), context.epochs + context.finetune_epochs, TRAIN_LR
        else:
            model, epochs, rate = keras.models.clone_model(context.dense), context.finetune_epochs, context.finetune_lr
            model.set_weights(context.dense.get_weights())
        trimmed, _ = ts.csgd_prune(model, plan, context.train, epochs, learning_rate=rate, pull=pull,
                                   seed=context.seed)
        logits = [(model(x, training=False), trimmed(x, training=False)) for x, _ in context.test.take(4)]
        return trimmed, {"max_logit_diff": max(float(np.max(np.abs(a - b))) for a, b in logits)}

    return run


def polarization_method(dynamic=False, blocks=0.0):
    """A method: polarization in one pass from a fresh model, trained for the same total epochs as every other."""

    def run(context, ratio):
        keras.utils.set_random_seed(context.seed)
        epochs = context.epochs + context.finetune_epochs
        gated = ts.polarize(context.build(), ratio, steps=epochs * int(context.train.cardinality()), blocks=blocks,
                            dynamic=dynamic, logit_scale=10.0)
        ts.finetune(gated, context.train, epochs, learning_rate=TRAIN_LR, calibration_batches=0, verbose=0)
        statistics = ts.callbacks.gate_statistics(gated)
        extra = {"removed_channels": 1 - statistics["gates_open"], "polarized": statistics["gates_polarized"]}
        if dynamic:
            extra["test_consensus"] = ts.callbacks.gate_consensus(gated, context.test)
        if blocks:
            extra["removed_blocks"] = 1 - statistics["blocks_open"]
        stripped = ts.strip(gated)
        ts.recalibrate_batch_norm(stripped, context.train)
        return stripped, extra

    return run


# Network slimming's L1 penalty on BatchNorm gamma, scaled to this benchmark's short runs: Liu et al. (2017) use
# 1e-5 (ResNet) and 1e-4 (VGG) over about 3,400 units of summed learning rate; 6 cosine epochs here sum to about
# 24, so the penalties grow by the ratio to shrink gamma by the same total amount.
SLIMMING_PENALTY = {"resnet20": 1.5e-3, "vgg": 1.5e-2}


def slimming_method(target="channels"):
    """A method: network slimming, the dense model trained with an L1 penalty on BN gamma, pruned, fine-tuned.

    The model is pruned globally by |gamma|, `ratio` counted in `target`
    (channels, or FLOPs for a comparison at equal FLOPs).
    """
    return lambda context, ratio: _slimming(context, ratio, target)


def _slimming(context, ratio, target):
    keras.utils.set_random_seed(context.seed)
    model = context.build()
    penalty = keras.regularizers.L1(SLIMMING_PENALTY[context.name])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.regularizer = penalty
    ts.finetune(model, context.train, context.epochs, learning_rate=TRAIN_LR, verbose=0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.regularizer = None
    pruned = ts.prune_channels(model, ratio, importance="bn_scale", scope="global", target=target, print_fn=None)
    return pruned, fine_tuned(pruned, context)


def fine_tuned(pruned, context, teacher=None):
    """Recomputes `pruned`'s BatchNorm statistics, fine-tunes it (distilling from `teacher`, if given).

    Returns its accuracy before fine-tuning.
    """
    ts.recalibrate_batch_norm(pruned, context.train)
    before = evaluate(pruned, context.test)
    ts.finetune(pruned, context.train, context.finetune_epochs, learning_rate=context.finetune_lr, teacher=teacher,
                verbose=0)
    return {"before_finetuning": before}


# Taylor scores average the gradient over 10 batches (1,280 images).
CRITERIA = {"l1": "l1", "l2": "l2", "bn_scale": "bn_scale", "taylor": ts.scoring.Taylor(batches=10)}
METHODS = {
    **{f"{name}/{scope}": criterion_method(importance, scope)
       for name, importance in CRITERIA.items() for scope in ("global", "layer")},
    # HAP's comparison: that fraction of the parameters removed, under HAP's layer limit.
    **{f"{name}/params": criterion_method(CRITERIA[name], "global", "params", 0.95) for name in ("l1", "taylor")},
    # Fine-tuned with knowledge distillation from the dense model (`tfsparse.finetune(teacher=...)`).
    "l1/global+distillation": criterion_method("l1", "global", distilled=True),
    # The ratio counted in FLOPs: a baseline at the FLOPs another method reached.
    "l1/flops": criterion_method("l1", "global", "flops"),
    "hap+implants/params": hap_method(0.1),
    "hap/params": hap_method(0.0),
    "hap+implants/params/layer-trace": hap_method(0.1, per="layer"),
    "csgd/layer": csgd_method(),
    "csgd/scratch": csgd_method(from_scratch=True),
    # 1.25x wider, unpulled for half the steps, the clusters met by 7/8 of them.
    "csgd/widen-late": csgd_method(from_scratch=True, pull=(0.5, 0.875), width=1.25),
    "polarization": polarization_method(),
    "polarization/dynamic": polarization_method(dynamic=True),
    # A third of the residual blocks with an identity shortcut removed as well.
    "polarization/blocks": polarization_method(blocks=1 / 3),
    "slimming": slimming_method(),
    "slimming/flops": slimming_method("flops"),
}

# Methods that never use the trained dense model.
FROM_SCRATCH = {"csgd/scratch", "csgd/widen-late", "polarization", "polarization/dynamic", "polarization/blocks",
                "slimming", "slimming/flops"}


def training_subset(count, seed):
    """A fixed random subset of `count` Fashion-MNIST training images, reshuffled each epoch."""
    images, labels = next(iter(ts.data.load("fashion_mnist", "train", batch_size=count, seed=seed)))
    subset = tf.data.Dataset.from_tensor_slices((images, labels))
    return subset.shuffle(count, seed=seed, reshuffle_each_iteration=True).batch(BATCH).prefetch(2)


def evaluate(model, test):
    """Test accuracy of `model` (compiled here for evaluation only if it is not)."""
    if not model.compiled:
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def cost(network, samples):
    """Parameters, FLOPs and LiteRT batch-1 latency of `network`."""
    total = ts.summary(network, print_fn=None).total
    with tempfile.TemporaryDirectory() as folder:
        report = ts.export.tflite(network, os.path.join(folder, "model.tflite"), sample_inputs=samples)
    return {"parameters": int(total["parameters"]), "flops": int(total["flops"]), "litert_ms": report.litert_latency_ms}


def measure(network, test, samples, **extra):
    """Accuracy and `cost` of `network`, with `extra` fields."""
    return {"accuracy": evaluate(network, test), **cost(network, samples), **extra}


def dense_model(name, train, examples, epochs, seed, cache=None, model=None):
    """`(model, seconds)`: `model` (a fresh dense one if None) trained with the dense recipe.

    On `train` (`training_subset(examples, seed)`), for `epochs`. A fresh
    dense model's weights are kept in, and reused from, the directory `cache`.
    """
    keras.utils.set_random_seed(seed)
    stem = f"structured_{name}_{examples}_{epochs}epochs_seed{seed}"
    path = cache and model is None and os.path.join(cache, f"{stem}.weights.h5")
    model = model or MODELS[name]()
    started = time.perf_counter()
    if path and os.path.exists(path):
        model.load_weights(path)
    else:
        ts.finetune(model, train, epochs, learning_rate=TRAIN_LR, verbose=0)
        if path:
            os.makedirs(cache, exist_ok=True)
            model.save_weights(path)
    return model, time.perf_counter() - started


def run_model(name, args, seed, report):
    """All rows of one model and seed; `report(rows)` is called after each new row."""
    train, test = training_subset(args.train_examples, seed), ts.data.load("fashion_mnist", "test", BATCH)
    samples = np.asarray(next(iter(test))[0][:8])
    total_epochs = args.epochs + args.finetune_epochs
    rows = []
    # FLOPs and latency depend on the architecture only: the dense reference is the freshly built model.
    reference = cost(MODELS[name](), samples)

    def add(model, **fields):
        row = measure(model, test, samples, model=name, seed=seed, **fields)
        row.update(flops_ratio=reference["flops"] / row["flops"],
                   litert_speedup=reference["litert_ms"] / row["litert_ms"])
        rows.append(row)
        report(rows)
        return row

    def trained(epochs, model=None):
        """Trains `model` (the dense model if None; only the dense models are cached) for `epochs`."""
        return dense_model(name, train, args.train_examples, epochs, seed, args.cache, model)

    dense = None
    if not args.skip_dense:
        dense, seconds = trained(args.epochs)
        add(dense, method="dense", epochs=args.epochs, seconds=seconds)
        same_total, seconds = trained(total_epochs)
        add(same_total, method="dense, same total", epochs=total_epochs, seconds=seconds)
        print(f"[{name} seed {seed}] dense {rows[0]['accuracy']:.4f}, same total {rows[1]['accuracy']:.4f}",
              flush=True)
    context = Context(name, train, test, dense, MODELS[name], args.epochs, args.finetune_epochs, args.finetune_lr, seed)
    for method in args.methods:
        for ratio in args.ratios:
            started = time.perf_counter()
            pruned, extra = METHODS[method](context, ratio)
            row = add(pruned, method=method, ratio=ratio, epochs=total_epochs, seconds=time.perf_counter() - started,
                      **extra)
            message = (f"[{name} seed {seed}] {method} {ratio:.0%}: {row['accuracy']:.4f}, "
                       f"FLOPs / {row['flops_ratio']:.2f}")
            if args.scratch:
                scratch, seconds = trained(total_epochs, ts.reinitialize(pruned, seed))
                row = add(scratch, method=f"{method} widths, scratch", ratio=ratio, epochs=total_epochs,
                          seconds=seconds)
                message += f", same widths from scratch {row['accuracy']:.4f}"
            print(message, flush=True)
    return rows


def goals(rows):
    """The structured core's goals, checked per model on the 50% rows of each method (means over seeds)."""

    def mean(method, model, ratio=None):
        values = [r["accuracy"] for r in rows if r["model"] == model and r["method"] == method
                  and r.get("ratio") == ratio]
        return float(np.mean(values)) if values else None

    found = {}
    for model in sorted({r["model"] for r in rows}):
        dense = mean("dense, same total", model)
        for method in sorted({r["method"] for r in rows if r["model"] == model and r.get("ratio") == 0.5
                              and not r["method"].endswith("scratch")}):
            pruned = mean(method, model, 0.5)
            scratch = mean(f"{method} widths, scratch", model, 0.5)
            one = next(r for r in rows if r["model"] == model and r["method"] == method and r.get("ratio") == 0.5)
            gap = None if dense is None else dense - pruned
            found[f"{model} {method} 50%"] = {
                "accuracy": pruned, "dense_same_total": dense, "gap_points": None if gap is None else 100 * gap,
                "within_1.5_points": None if gap is None else gap <= 0.015, "flops_ratio": one["flops_ratio"],
                "flops_3x": one["flops_ratio"] >= 3, "litert_speedup": one["litert_speedup"],
                "scratch": scratch, "beats_scratch": None if scratch is None else pruned > scratch,
            }
    return found


def plot(rows, path):
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for method in dict.fromkeys(r["method"] for r in mine if "ratio" in r):
            points = sorted((r["flops"] / 1e6, r["accuracy"]) for r in mine if r["method"] == method)
            style = "--" if method.endswith("scratch") else "-"
            ax.plot(*zip(*points), style, marker="o", label=method)
        for method, marker in (("dense", "*"), ("dense, same total", "P")):
            for r in mine:
                if r["method"] == method:
                    ax.plot(r["flops"] / 1e6, r["accuracy"], marker, color="black", markersize=11, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("MFLOPs per example")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{model}, Fashion-MNIST")
        handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
        ax.legend(handles.values(), handles.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20"], choices=sorted(MODELS))
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--epochs", type=int, default=6, help="dense training epochs before pruning")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="initial learning rate of fine-tuning")
    parser.add_argument("--train-examples", type=int, default=10000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--scratch", action="store_true", help="also train every pruned architecture from scratch")
    parser.add_argument("--cache", help="directory to keep the dense models' weights in and reuse them from")
    parser.add_argument("--output", help="name of the JSON and plot files (default structured_<models>)")
    parser.add_argument("--skip-dense", action="store_true",
                        help="train no dense models (for methods that start from a fresh model, when another run of "
                             "the same seeds measured the dense rows)")
    args = parser.parse_args()
    needs_dense = sorted(set(args.methods) - FROM_SCRATCH)
    if args.skip_dense and needs_dense:
        parser.error(f"--skip-dense: methods {needs_dense} prune the dense model; only {sorted(FROM_SCRATCH)} "
                     "start from a fresh one")
    started = time.time()
    stem = args.output or f"structured_{'_'.join(args.models)}"
    settings = {**vars(args), "batch": BATCH, "train_lr": TRAIN_LR,
                "recipe": "tfsparse.finetune: SGD nesterov 0.9, cosine, weight decay 5e-4, BN recalibrated"}
    finished = []

    def report(rows):
        """Writes what is measured so far: an interrupted run keeps its rows."""
        everything = finished + rows
        return write_json(stem, {"settings": settings, "machine": machine(), "minutes": (time.time() - started) / 60,
                                 "rows": everything, "goals": goals(everything)})

    for name in args.models:
        for seed in args.seeds:
            finished += run_model(name, args, seed, report)
    path = report([])
    plot(finished, RESULTS / f"{stem}.png")
    print(f"Wrote {path} and {stem}.png")


if __name__ == "__main__":
    main()
