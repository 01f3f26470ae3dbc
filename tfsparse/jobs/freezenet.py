"""The FreezeNet job: dense vs SNIP vs FreezeNet, compact checkpoints and TFLite files."""

import keras
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import export, walk  # noqa: E402
from tfsparse.model_summary import summary  # noqa: E402
from tfsparse.optimizers import cosine_sgd  # noqa: E402
from tfsparse.jobs import common  # noqa: E402
from tfsparse.methods.freezenet import (  # noqa: E402
    freezenet,
    reinitialize,
    snip,
    trainable_count,
)

HELP = "train FreezeNet and SNIP at one-shot saliency masks, compare with dense, write compact and TFLite files"


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=10)
    parser.add_argument("--freeze-rate", type=float, nargs="+", default=[0.9, 0.99],
                        help="fractions of kernel weights to freeze (FreezeNet) or prune (SNIP), in [0, 1)")


def run(args):
    rates = sorted(args.freeze_rate)
    if not all(0.0 <= rate < 1.0 for rate in rates):
        raise SystemExit(f"--freeze-rate values must be in [0, 1), received: {args.freeze_rate}.")
    out = common.output_dir(args)
    train, test, shape, classes = common.load_data(args)
    steps = sum(1 for _ in train) * args.epochs
    batch = tuple(np.asarray(t) for t in next(iter(train)))  # the one scoring batch of SNIP and FreezeNet

    def fit(model):
        model.compile(cosine_sgd(steps, weight_decay=5e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(train, epochs=args.epochs, verbose=common.fit_verbosity())
        return common.accuracy(model, test)

    build = common.MODELS[args.model]
    print(f"\nTraining dense {args.model} on {args.data} for {args.epochs} epochs (weights drawn from seed {args.seed})")
    dense = reinitialize(build(shape, classes), args.seed)
    parameters = dense.count_params()
    weights = sum(int(np.prod(w.shape)) for w in walk.prunable_weights(dense).values())
    rows = [{"model": "dense", "freeze rate": 0.0, "compression": 1.0, "trained": parameters,
             "test accuracy": fit(dense)}]
    plain = keras.models.clone_model(dense)  # the trained weights without optimizer state, like the compact file
    plain.set_weights(dense.get_weights())
    plain.save(out / "dense.keras")
    samples = next(iter(test))[0][:16]
    for rate in rates:
        kept = trainable_count(rate, weights)
        print(f"\nFreezeNet at freeze rate {rate}: {kept:,} of {weights:,} kernel weights train, the rest stay frozen")
        frozen = freezenet(build(shape, classes), rate, batch, seed=args.seed)
        accuracy = fit(frozen)
        totals = summary(frozen, print_fn=None).total
        name = f"freezenet_{rate}"
        export.save_compact(frozen, out / f"{name}.tfsparse")
        restored = export.load_compact(out / f"{name}.tfsparse")
        identical = np.array_equal(restored.predict(samples, verbose=0), frozen.predict(samples, verbose=0))
        report = export.tflite(frozen, out / f"{name}.tflite", sparse=False, sample_inputs=samples)
        rows.append({
            "model": "FreezeNet", "freeze rate": rate, "compression": totals["compression"],
            "trained": parameters - totals["frozen"], "test accuracy": accuracy,
            "compact bytes": (out / f"{name}.tfsparse").stat().st_size,
            "reload bit-exact": "yes" if identical else "no",
            "TFLite bytes": report.bytes, "LiteRT max |diff|": report.max_abs_diff,
        })
        print(f"\nSNIP keeping the same {kept:,} kernel weights and zeroing the rest")
        pruned = snip(build(shape, classes), (weights - kept) / weights, batch, seed=args.seed)
        trained = parameters - weights + kept
        rows.append({"model": "SNIP", "freeze rate": rate, "compression": parameters / trained,
                     "trained": trained, "test accuracy": fit(pruned)})
    print(f"\nCompression: all {parameters:,} parameters / trained ones (biases always train). "
          f"dense .keras: {(out / 'dense.keras').stat().st_size:,} bytes. FreezeNet stays dense at inference.")
    columns = ["model", "freeze rate", "compression", "trained", "test accuracy", "compact bytes",
               "reload bit-exact", "TFLite bytes", "LiteRT max |diff|"]
    common.print_table(rows, columns, percent=("test accuracy",))
    plot = _plot(rows, args, out / "freezenet.png")
    print(f"\nWrote {plot} and, per rate, freezenet_<rate>.tfsparse and freezenet_<rate>.tflite in {out}")
    return rows


def _plot(rows, args, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, style in (("FreezeNet", "o-"), ("SNIP", "s--")):
        points = [row for row in rows if row["model"] == method]
        ax.plot([p["compression"] for p in points], [p["test accuracy"] for p in points], style, label=method)
    ax.axhline(rows[0]["test accuracy"], color="black", lw=0.8, label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("compression factor (all parameters / trained parameters)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left")
    ax.set_title(f"{args.model} on {args.data}: frozen random weights (FreezeNet) vs zeros (SNIP)")
    return common.save_figure(fig, path)
