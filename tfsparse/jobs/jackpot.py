"""The Lottery Jackpot job: pre-train (or load) a model, then search a sparse mask over its frozen weights."""

import keras
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import callbacks  # noqa: E402
from tfsparse.jobs import common  # noqa: E402
from tfsparse.layers.scored import INITS, Scored  # noqa: E402
from tfsparse.methods.jackpot import lottery_jackpot  # noqa: E402
from tfsparse.model_summary import summary  # noqa: E402
from tfsparse.optimizers import cosine_sgd  # noqa: E402
from tfsparse.surgery import strip  # noqa: E402

HELP = "find a sparse sub-network of a pre-trained model without training its weights (Lottery Jackpots)"


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=5)
    parser.add_argument("--sparsity", type=float, default=0.9, help="fraction of the searched kernels to prune")
    parser.add_argument("--weights", default=None,
                        help="pre-trained weights of --model (.weights.h5); pre-trains first when omitted")
    parser.add_argument("--pretrain-epochs", type=common.non_negative_int, default=10, help="dense epochs when --weights is omitted")
    parser.add_argument("--init", default="magnitude", choices=INITS, help="initial mask of the search")
    parser.add_argument("--lr", type=float, default=0.1,
                        help="initial (cosine-decayed) learning rate of the scores; 0.1 as in the reference")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="short restriction: fraction of candidate pairs swapped per step (0 to 1)")


def run(args):
    if not 0.0 <= args.sparsity < 1.0:
        raise SystemExit(f"--sparsity must be in [0, 1), received: {args.sparsity}.")
    if not 0.0 <= args.rate <= 1.0:
        raise SystemExit(f"--rate must be in [0, 1], received: {args.rate}.")
    if not args.lr > 0.0:
        raise SystemExit(f"--lr must be > 0, received: {args.lr}.")
    out = common.output_dir(args)
    train, test, shape, classes = common.load_data(args)
    dense = common.compile_model(common.build_model(args, shape, classes))
    if args.weights:
        print(f"\n1/3 Loading pre-trained weights of {args.model} from {args.weights}")
        dense.load_weights(args.weights)
    else:
        print(f"\n1/3 Pre-training dense {args.model} on {args.data} for {args.pretrain_epochs} epochs")
        dense.fit(train, epochs=args.pretrain_epochs, verbose=common.fit_verbosity())
        dense.save_weights(out / "pretrained.weights.h5")

    print(f"\n2/3 Searching a {args.sparsity:.0%}-sparse mask ({args.init} init) for {args.epochs} epochs; "
          f"no weight is trained")
    search = lottery_jackpot(dense, args.sparsity, init=args.init, seed=args.seed)
    steps = sum(1 for _ in train) * args.epochs
    # The loss includes the scores' weight decay; `task_loss` is the cross-entropy alone.
    task_loss = keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="task_loss")
    search.compile(cosine_sgd(steps, learning_rate=args.lr),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy", task_loss])
    start = common.accuracy(search, test)
    history = search.fit(train, validation_data=test, epochs=args.epochs, verbose=common.fit_verbosity(),
                         callbacks=[callbacks.ShortRestriction(rate=args.rate)])

    print("\n3/3 Stripping the search and checking the kept weights")
    plain = common.compile_model(strip(search))
    plain.save(out / "jackpot.keras")
    identical = _kept_weights_identical(dense, plain)
    moved = sum(layer.summary_fields()["hamming"] for layer in search.layers if isinstance(layer, Scored))
    sparsity = summary(plain, print_fn=None).total["sparsity"]
    rows = [
        {"model": "dense", "test accuracy": common.accuracy(dense, test),
         "sparsity": summary(dense, print_fn=None).total["sparsity"]},
        {"model": "magnitude, no retraining", "test accuracy": start, "sparsity": sparsity},
        {"model": "jackpot", "test accuracy": common.accuracy(plain, test), "sparsity": sparsity,
         "mask moved (weights)": moved, "kept weights identical": "yes" if identical else "no"},
    ]
    print("\nSparsity counts all parameters (biases, normalization and the dense classifier included).")
    common.print_table(rows, ["model", "test accuracy", "sparsity", "mask moved (weights)", "kept weights identical"],
                       percent=("test accuracy", "sparsity"))
    plot = _plot(start, history.history["val_accuracy"], rows[0]["test accuracy"], out / "jackpot.png")
    print(f"\nWrote {plot} and {out / 'jackpot.keras'}")
    return rows


def _kept_weights_identical(dense, plain):
    """True if every trained weight of `plain` is bit-identical to `dense`'s or exactly zero.

    BatchNormalization's moving statistics are left out: the search updates them.
    """
    for before, after in zip(dense.trainable_weights, plain.trainable_weights):
        a, b = keras.ops.convert_to_numpy(before), keras.ops.convert_to_numpy(after)
        kept = b != 0
        if a.shape != b.shape or a[kept].tobytes() != b[kept].tobytes():
            return False
    return True


def _plot(start, accuracies, dense_accuracy, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(len(accuracies) + 1), [start, *accuracies], "o-", label="jackpot: test accuracy")
    ax.axhline(dense_accuracy, color="black", lw=0.8, label="dense (pre-trained)")
    ax.set_xlabel("search epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title("Lottery Jackpot search over frozen pre-trained weights")
    return common.save_figure(fig, path)
