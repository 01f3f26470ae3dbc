"""The polarization job: train a gated model once, strip its closed channels, compare with the dense model."""

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import checks  # noqa: E402
from tfsparse.callbacks import GateMonitor  # noqa: E402
from tfsparse.jobs import common  # noqa: E402
from tfsparse.layers.gate import gate_sets  # noqa: E402
from tfsparse.methods.polarization import polarize  # noqa: E402
from tfsparse.surgery import strip  # noqa: E402

HELP = "find a sub-network of the requested channel sparsity in one pass of training (polarization gates)"


def add_arguments(parser):
    common.add_common_arguments(parser, epochs=8, model="resnet20")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of the prunable channels to remove")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the gated and dense runs")
    parser.add_argument("--blocks", type=float, default=0.0, help="fraction of the residual blocks to remove")
    parser.add_argument("--dynamic", action="store_true", help="input-dependent gates during training")
    parser.add_argument("--no-dense", action="store_true", help="skip training the dense model for comparison")


def run(args):
    sparsity = checks.check_fraction(args.sparsity, "sparsity")
    out = common.output_dir(args)
    train, test, shape, classes = common.load_data(args)
    dense = common.build_model(args, shape, classes)
    steps = args.epochs * int(train.cardinality())
    gated = common.compile_model(polarize(dense, sparsity, steps=steps, blocks=args.blocks, dynamic=args.dynamic),
                                 args.lr)
    blocks = f" and {args.blocks:.0%} of the residual blocks" if args.blocks else ""
    print(f"\n1/2 Training {args.model} with channel gates on {args.data} for {args.epochs} epochs "
          f"({steps} steps), {sparsity:.0%} of the channels{blocks} to remove")
    gated.fit(train, epochs=args.epochs, verbose=common.fit_verbosity(), callbacks=[GateMonitor(out / "logs")])
    stripped = strip(gated)
    stripped.save(out / "polarized.keras")
    common.compile_model(stripped, args.lr)
    samples = np.asarray(next(iter(test))[0])
    rows = [common.model_row("gated", gated, test), common.model_row("stripped", stripped, test)]
    rows[1]["max |diff|"] = float(np.max(np.abs(np.asarray(stripped(samples)) - np.asarray(gated(samples)))))
    if not args.no_dense:
        print(f"\n2/2 Training dense {args.model} for the same {args.epochs} epochs")
        dense = common.compile_model(dense, args.lr)
        dense.fit(train, epochs=args.epochs, verbose=common.fit_verbosity())
        rows.insert(0, common.model_row("dense", dense, test))
    ((leader, _),) = gate_sets(gated).values()
    removed = 1.0 - float(np.mean(np.asarray(leader.open_gates())))
    print(f"\nRemoved {removed:.2%} of the prunable channels (asked: {sparsity:.2%})"
          + (f" and the residual blocks {', '.join(leader.closed_blocks())}." if args.blocks else "."))
    common.print_table(rows, ["model", "test accuracy", "parameters", "FLOPs", "max |diff|"],
                       percent=("test accuracy",))
    plot = _plot(np.asarray(leader.probabilities()), out / "gate_histogram.png")
    print(f"\nWrote {plot}, {out / 'polarized.keras'} and TensorBoard logs in {out / 'logs'}")
    return {"rows": rows, "removed": removed}


def _plot(probabilities, path):
    """The histogram of the gate probabilities at the end of training (polarized: two peaks)."""
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.hist(probabilities, bins=np.linspace(0, 1, 41))
    axis.set_xlabel("gate probability sigmoid(logit)")
    axis.set_ylabel("gates")
    axis.set_title("Gates at the end of training")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
