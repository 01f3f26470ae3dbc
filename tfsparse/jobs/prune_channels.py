"""The structured pruning job: train (or load) a model, remove channels, fine-tune, compare size, speed, accuracy."""

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import checks  # noqa: E402
from tfsparse.jobs import common  # noqa: E402
from tfsparse.methods.finetune import finetune, recalibrate_batch_norm  # noqa: E402
from tfsparse.methods.freezenet import reinitialize  # noqa: E402
from tfsparse.methods.structured import SCOPES, prune_channels  # noqa: E402
from tfsparse.scoring.channel_criteria import CRITERIA  # noqa: E402

HELP = "remove the least important channels of a trained model, fine-tune it, compare accuracy, FLOPs and latency"


def add_arguments(parser):
    common.add_structured_arguments(parser, target="channels")
    parser.add_argument("--importance", default="l1", choices=sorted(CRITERIA), help="channel importance criterion")
    parser.add_argument("--scope", default="global", choices=SCOPES,
                        help="rank channels across all layers (global) or remove --ratio of each layer")
    parser.add_argument("--scratch", action="store_true",
                        help="also train the pruned widths from scratch for --epochs + --finetune-epochs")


def run(args):
    checks.check_fraction(args.ratio, "ratio")
    out = common.output_dir(args)
    train, test, shape, classes = common.load_data(args)
    dense = common.trained_dense_model(args, train, shape, classes)

    print(f"\n2/3 Removing {args.ratio:.0%} of the {args.target} ({args.importance}, {args.scope} scope), "
          f"then fine-tuning for {args.finetune_epochs} epochs")
    pruned = prune_channels(dense, args.ratio, importance=args.importance, data=train, scope=args.scope,
                            target=args.target)
    # Removing channels changes what later BatchNormalizations see: measure with statistics recomputed.
    recalibrate_batch_norm(pruned, train)
    before_finetuning = common.accuracy(common.compile_model(pruned), test)
    finetune(pruned, train, args.finetune_epochs, learning_rate=args.finetune_lr, verbose=common.fit_verbosity())
    pruned.save(out / "pruned.keras")

    print("\n3/3 Exporting both models to TFLite and timing them with LiteRT (batch 1)")
    samples = np.asarray(next(iter(test))[0][:8])
    rows = [common.model_row("dense", dense, test, out / "dense.tflite", samples),
            common.model_row("pruned, fine-tuned", pruned, test, out / "pruned.tflite", samples)]
    rows[1]["before fine-tuning"] = before_finetuning
    if args.scratch:
        epochs = args.epochs + args.finetune_epochs
        print(f"\nTraining the pruned widths from scratch for {epochs} epochs")
        scratch = reinitialize(pruned, args.seed)
        finetune(scratch, train, epochs, learning_rate=args.lr, verbose=common.fit_verbosity())
        rows.append(common.model_row("same widths, from scratch", scratch, test, out / "scratch.tflite", samples))
    for row in rows:
        row["FLOPs ratio"] = rows[0]["FLOPs"] / row["FLOPs"]
        row["speed-up"] = rows[0]["LiteRT ms"] / row["LiteRT ms"]
    print()
    common.print_table(rows, ["model", "test accuracy", "before fine-tuning", "parameters", "FLOPs", "FLOPs ratio",
                              "LiteRT ms", "speed-up"], percent=("test accuracy", "before fine-tuning"))
    plot = _plot(dense, pruned, rows, out / "prune_channels.png")
    print(f"\nWrote {plot}, {out / 'pruned.keras'} and the .tflite files in {out}")
    return rows


def _plot(dense, pruned, rows, path):
    """Channels kept per layer (left) and accuracy against FLOPs (right)."""
    widths = [(layer.name, common.layer_width(layer)) for layer in dense.layers if common.layer_width(layer)]
    kept = [common.layer_width(pruned.get_layer(name)) for name, _ in widths]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    positions = np.arange(len(widths))
    left.bar(positions, [w for _, w in widths], color="lightgray", label="dense")
    left.bar(positions, kept, color="tab:blue", label="kept")
    left.set_xticks(positions, [name for name, _ in widths], rotation=90, fontsize=7)
    left.set_ylabel("channels")
    left.legend()
    left.set_title("Channels kept per layer")
    common.plot_accuracy_against_cost(right, rows)
    return common.save_figure(fig, path)
