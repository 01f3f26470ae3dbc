"""The Hessian-aware pruning job: train (or load) a model, prune with HAP and implants, fine-tune, compare."""

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tfsparse import checks  # noqa: E402
from tfsparse.jobs import common  # noqa: E402
from tfsparse.methods.finetune import finetune, recalibrate_batch_norm  # noqa: E402
from tfsparse.methods.hap import IMPLANT_SUFFIX, hap  # noqa: E402
from tfsparse.methods.structured import prune_channels  # noqa: E402
from tfsparse.scoring.hessian import hessian_trace  # noqa: E402

HELP = "prune a trained model by Hessian sensitivity with 1x1 neural implants (HAP), fine-tune, compare"


def add_arguments(parser):
    common.add_structured_arguments(parser, target="params")
    parser.add_argument("--implant-fraction", type=float, default=0.1,
                        help="fraction of the selected channels implanted rather than removed, in [0, 1]")
    parser.add_argument("--samples", type=common.positive_int, default=32,
                        help="Rademacher vectors of the Hessian trace estimates")
    parser.add_argument("--hessian-batches", type=common.positive_int, default=2,
                        help="training batches the Hessian is taken on")
    parser.add_argument("--compare", action="store_true",
                        help="also prune to the same target without implants and by L1 norm, fine-tuned alike")


def run(args):
    checks.check_fraction(args.ratio, "ratio")
    checks.check_fraction(args.implant_fraction, "implant_fraction", include_one=True)
    out = common.output_dir(args)
    train, test, shape, classes = common.load_data(args)
    dense = common.trained_dense_model(args, train, shape, classes)

    print(f"\n2/3 Removing {args.ratio:.0%} of the {args.target} by Hessian sensitivity ({args.samples} samples), "
          f"{args.implant_fraction:.0%} of the selected channels implanted; fine-tuning for {args.finetune_epochs} "
          f"epochs")
    hessian_data = train.take(args.hessian_batches)
    candidates = {"HAP + implants": lambda: hap(dense, args.ratio, hessian_data, args.implant_fraction, args.samples,
                                                args.target, batches=args.hessian_batches, seed=args.seed)}
    if args.compare:
        candidates["HAP, no implants"] = lambda: hap(dense, args.ratio, hessian_data, 0.0, args.samples, args.target,
                                                     batches=args.hessian_batches, seed=args.seed)
        candidates["L1"] = lambda: prune_channels(dense, args.ratio, "l1", target=args.target,
                                                  max_layer_ratio=0.95)
    pruned = {}
    before = {}
    for name, prune in candidates.items():
        model = prune()
        # Removing channels changes what later BatchNormalizations see: measure with statistics recomputed.
        recalibrate_batch_norm(model, train)
        before[name] = common.accuracy(common.compile_model(model), test)
        finetune(model, train, args.finetune_epochs, learning_rate=args.finetune_lr, verbose=common.fit_verbosity())
        pruned[name] = model
    pruned["HAP + implants"].save(out / "hap.keras")

    print("\n3/3 Exporting the models to TFLite and timing them with LiteRT (batch 1)")
    samples = np.asarray(next(iter(test))[0][:8])
    rows = [common.model_row("dense", dense, test, out / "dense.tflite", samples)]
    for index, (name, model) in enumerate(pruned.items()):
        row = common.model_row(name, model, test, out / f"hap_{index}.tflite", samples)
        row["before fine-tuning"] = before[name]
        row["implanted channels"] = sum(layer.filters for layer in model.layers if layer.name.endswith(IMPLANT_SUFFIX))
        rows.append(row)
    for row in rows:
        row["FLOPs ratio"] = rows[0]["FLOPs"] / row["FLOPs"]
        row["speed-up"] = rows[0]["LiteRT ms"] / row["LiteRT ms"]
    print()
    common.print_table(rows, ["model", "test accuracy", "before fine-tuning", "parameters", "FLOPs", "FLOPs ratio",
                              "implanted channels", "LiteRT ms", "speed-up"],
                       percent=("test accuracy", "before fine-tuning"))
    traces = hessian_trace(dense, hessian_data, args.samples, args.hessian_batches, per="layer", seed=args.seed,
                           verbose=0)
    plot = _plot(dense, pruned["HAP + implants"], traces, out / "hap.png")
    print(f"\nWrote {plot}, {out / 'hap.keras'} and the .tflite files in {out}")
    return rows


def _plot(dense, pruned, traces, path):
    """Per-layer Hessian trace estimates with their standard errors (left), channels kept and implanted (right)."""
    names = [key.rsplit("/", 1)[0] for key in traces]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    positions = np.arange(len(names))
    left.errorbar(positions, [t.value for t in traces.values()], yerr=[2 * t.stderr for t in traces.values()],
                  fmt="o", capsize=3)
    left.axhline(0, color="black", lw=0.8)
    left.set_xticks(positions, names, rotation=90, fontsize=7)
    left.set_ylabel("Hessian trace (2 standard errors)")
    left.set_title("Hutchinson trace estimate per weight")
    widths = [(layer.name, common.layer_width(layer)) for layer in dense.layers if common.layer_width(layer)]
    names = {layer.name: layer for layer in pruned.layers}
    kept = [common.layer_width(names[name]) for name, _ in widths]
    implanted = [common.layer_width(names[name + IMPLANT_SUFFIX]) if name + IMPLANT_SUFFIX in names else 0
                 for name, _ in widths]
    positions = np.arange(len(widths))
    right.bar(positions, [w for _, w in widths], color="lightgray", label="dense")
    right.bar(positions, kept, color="tab:blue", label="kept")
    right.bar(positions, implanted, bottom=kept, color="tab:orange", label="implanted (1x1)")
    right.set_xticks(positions, [name for name, _ in widths], rotation=90, fontsize=7)
    right.set_ylabel("channels")
    right.legend()
    right.set_title("Channels kept per layer")
    return common.save_figure(fig, path)
