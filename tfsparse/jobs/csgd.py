"""The C-SGD job: train a model, make its channel clusters identical, trim it exactly, compare with the baselines."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import checks  # noqa: E402
from tfsparse.callbacks.cluster_monitor import ClusterMonitor  # noqa: E402
from tfsparse.jobs import common  # noqa: E402
from tfsparse.methods import csgd  # noqa: E402
from tfsparse.methods.finetune import finetune, recalibrate_batch_norm  # noqa: E402
from tfsparse.methods.freezenet import reinitialize  # noqa: E402
from tfsparse.methods.structured import prune_channels  # noqa: E402

HELP = ("Centripetal SGD: cluster each layer's channels, train the clusters identical, trim exactly; compare with "
        "L1 pruning + fine-tuning and the same widths from scratch at equal total epochs")


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=4, model="resnet20")
    parser.add_argument("--width", type=float, default=0.625,
                        help="fraction of each layer's channels to keep, in (0, 1] (0.625: ResNet-20 at 5/8 width)")
    parser.add_argument("--csgd-epochs", type=common.positive_int, default=8,
                        help="C-SGD epochs, also L1's fine-tuning epochs and added to from-scratch training "
                             "(a trained model's biases and BatchNorm parameters need some hundred steps to agree)")
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate of dense training")
    parser.add_argument("--csgd-lr", type=float, default=0.05, help="initial learning rate of C-SGD")
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="initial learning rate of L1 fine-tuning")
    parser.add_argument("--strength", type=float, default=None,
                        help="centripetal strength (default: chosen from the step budget, tfsparse.csgd.strength)")
    parser.add_argument("--method", default="kmeans", choices=csgd.METHODS, help="how channels are clustered")


def run(args):
    if not 0 < args.width <= 1:
        raise ValueError(f"Argument `--width` must be in (0, 1], received: {args.width}.")
    ratio = checks.check_fraction(1 - args.width, "width")
    out = common.output_dir(args)
    train, test, shape, classes = common.load_data(args)
    total = args.epochs + args.csgd_epochs
    verbose = common.fit_verbosity()

    print(f"\n1/4 Training {args.model} on {args.data} for {args.epochs} epochs")
    dense = common.build_model(args, shape, classes)
    finetune(dense, train, args.epochs, learning_rate=args.lr, verbose=verbose)
    rows = [common.model_row(f"dense ({args.epochs} epochs)", dense, test, epochs=args.epochs)]
    dense.save_weights(out / "dense.weights.h5")

    print(f"\n2/4 C-SGD for {args.csgd_epochs} epochs, clusters keeping {args.width:.3g} of each layer's channels")
    model = common.build_model(args, shape, classes)
    model.load_weights(out / "dense.weights.h5")
    clusters = csgd.clusters(model, ratio, method=args.method, seed=args.seed)
    monitor = ClusterMonitor(clusters)
    trimmed, _ = csgd.csgd_prune(model, clusters["clusters"], train, args.csgd_epochs, learning_rate=args.csgd_lr,
                                 centripetal_strength=args.strength, callbacks=[monitor], verbose=verbose)
    (out / "clusters.json").write_text(json.dumps(clusters))
    trimmed.save(out / "csgd.keras")
    rows.append(common.model_row(f"C-SGD, untrimmed ({total} epochs)", model, test, epochs=total))
    rows.append(common.model_row(f"C-SGD, trimmed ({total} epochs)", trimmed, test, epochs=total))
    rows[-1]["max |logit diff|"] = _max_difference(model, trimmed, test)

    print(f"\n3/4 L1 pruning to the same widths, fine-tuned for {args.csgd_epochs} epochs")
    pruned = prune_channels(dense, ratio, importance="l1", scope="layer")
    recalibrate_batch_norm(pruned, train)
    finetune(pruned, train, args.csgd_epochs, learning_rate=args.finetune_lr, verbose=verbose)
    rows.append(common.model_row(f"L1 + fine-tuning ({total} epochs)", pruned, test, epochs=total))

    print(f"\n4/4 The trimmed widths trained from scratch for {total} epochs")
    scratch = reinitialize(trimmed, args.seed)
    finetune(scratch, train, total, learning_rate=args.lr, verbose=verbose)
    rows.append(common.model_row(f"same widths, from scratch ({total} epochs)", scratch, test, epochs=total))

    print()
    common.print_table(rows, ["model", "test accuracy", "parameters", "FLOPs", "max |logit diff|"],
                       percent=("test accuracy",))
    plot = _plot(monitor, rows, out / "csgd.png")
    print(f"\nWrote {plot}, {out / 'csgd.keras'} (trimmed) and {out / 'clusters.json'} in {out}")
    return rows


def _max_difference(model, trimmed, test):
    """Largest absolute difference of the two models' logits over the test set."""
    return max(float(abs(model(x, training=False) - trimmed(x, training=False)).numpy().max()) for x, _ in test)


def _plot(monitor, rows, path):
    """Largest distance to the kept channel over the C-SGD epochs (left), accuracy against FLOPs (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    distances = [max(epoch.values()) for epoch in monitor.history]
    left.semilogy(range(1, len(distances) + 1), distances, "o-")
    left.set_xlabel("C-SGD epoch")
    left.set_ylabel("largest distance to the kept channel")
    left.set_title("The clusters collapse (BatchNorm statistics included)")
    common.plot_accuracy_against_cost(right, rows)
    return common.save_figure(fig, path)
