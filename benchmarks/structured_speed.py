"""Structured pruning pays: latency of surgically narrowed models against their twins.

For ResNet-20 and the small MobileNetV2 (CIFAR-sized inputs), 25/50/75% of
the channels of every prunable group are removed with
`tfsparse.surgery.remove_channels` (the channels of lowest L1 norm, summed
over their slices of the group's producers). Each pruned model is timed
next to:

- the dense model (speed-up, shown next to the FLOP and parameter ratios);
- the same architecture built natively at the pruned widths (the goal is a
  latency ratio of at most 1.05: surgery leaves no gather, slice or mask),
  timed a second time in pairs of their own for this ratio;
- the dense model with the same number of weights zeroed by unstructured
  magnitude pruning (which gives no speed-up on dense kernels).

Keras is timed on CPU at batch 64 (`predict_on_batch`, `--keras-calls` per
round), LiteRT at batch 1 (`ai_edge_litert` Interpreter, one thread,
`--litert-runs` invocations per round), every call timed. The calls of all
variants of a model alternate (A, B, C, D, then the four again in a new
random order, ...) so machine noise hits them alike; each figure is the
median over all calls (the best call is recorded too, as `*_best`).

    python benchmarks/structured_speed.py [--rounds 15] [--keras-calls 3] [--litert-runs 20]

Writes benchmarks/results/structured_speed.json and structured_speed.png.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import RESULTS, machine, median, timed, write_json  # noqa: E402

MODELS = {"resnet20": ts.models.resnet20, "mobilenet_v2_small": ts.models.mobilenet_v2_small}
INPUT_SHAPE = (32, 32, 3)
FRACTIONS = (0.25, 0.5, 0.75)
KERAS_BATCH = 64


def l1_request(model, native):
    """`{group: channels}` removing, in each group, the channels of lowest L1 norm.

    A channel's norm sums its slices of every producer of the group (their
    kernels and biases, on the axes the group names). Each group keeps as
    many channels as its lead producer has in `native`.
    """
    request = {}
    for group in ts.surgery.dependency_groups(model):
        if not group.prunable:
            continue
        arrays = {(s.layer, s.weight): keras.ops.convert_to_numpy(next(
            w for w in model.get_layer(s.layer).weights if w.name == s.weight)) for s in group.slices
            if s.role == "producer"}
        norms = [
            sum(np.abs(np.take(arrays[layer, weight], indices, axis)).sum()
                for layer, weight, axis, indices in group.slices_of(c, roles=("producer",)))
            for c in range(group.size)
        ]
        drop = np.argsort(norms)[: group.size - native.get_layer(group.producers[0]).output.shape[-1]]
        request[group] = sorted(drop.tolist())
    return request


def unstructured(model, sparsity):
    """A copy of `model` with the smallest `sparsity` of every prunable kernel's entries zeroed."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if ts.registry.is_prunable(layer):
            for name in ts.registry.prunable_weight_names(layer):
                weight = next(w for w in layer.weights if w.name == name)
                mask = ts.scoring.magnitude.topk_mask(keras.ops.abs(weight), sparsity)
                weight.assign(weight * mask)
    return copy


def kernel_sparsity(model):
    """Fraction of zero entries over the prunable kernels of `model`."""
    zeros = total = 0
    for layer in model.layers:
        if ts.registry.is_prunable(layer):
            for name in ts.registry.prunable_weight_names(layer):
                array = keras.ops.convert_to_numpy(next(w for w in layer.weights if w.name == name))
                zeros, total = zeros + int(np.sum(array == 0)), total + array.size
    return zeros / total


def kernel_entries(model):
    return sum(
        int(np.prod(w.shape)) for layer in model.layers if ts.registry.is_prunable(layer)
        for w in layer.weights if w.name in ts.registry.prunable_weight_names(layer)
    )


def litert_interpreter(model, directory, name, sparse):
    """Converts with `tfsparse.export.tflite` and returns (interpreter, file bytes)."""
    from ai_edge_litert.interpreter import Interpreter

    path = os.path.join(directory, f"{name}.tflite")
    ts.export.tflite(model, path, sparse=sparse, check=False)
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter, os.path.getsize(path)


def interleaved(runs, rounds, calls, progress, seed=0):
    """Seconds of every call of each run: `calls` passes per round over the runs, one call each.

    Calls alternate between runs (A, B, C, A, ...), each pass in a new random
    order, so load changes hit every run alike and no run always follows the
    same one (a large model run just before evicts the caches).
    """
    rng = np.random.default_rng(seed)
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for _ in range(calls):
            for name in rng.permutation(list(runs)):
                times[name].append(timed(runs[name]))
        progress.add(1)
    return times


def measure(arch, rounds, keras_calls, litert_runs, directory):
    build = MODELS[arch]
    dense = build(INPUT_SHAPE)
    variants = {"dense": dense}
    for fraction in FRACTIONS:
        native = build(INPUT_SHAPE, width=1.0 - fraction)
        pruned = ts.surgery.remove_channels(dense, l1_request(dense, native))
        sparsity = 1.0 - kernel_entries(pruned) / kernel_entries(dense)
        variants[f"pruned_{fraction}"] = pruned
        variants[f"native_{fraction}"] = native
        variants[f"unstructured_{fraction}"] = unstructured(dense, sparsity)

    x = np.random.default_rng(0).uniform(size=(KERAS_BATCH, *INPUT_SHAPE)).astype("float32")
    one = x[:1]
    keras_runs, litert_runs_fns, info = {}, {}, {}
    preparing = keras.utils.Progbar(len(variants), unit_name="model")
    for name, model in variants.items():
        model.predict_on_batch(x)  # compiles the predict function
        keras_runs[name] = lambda m=model: m.predict_on_batch(x)
        interpreter, size = litert_interpreter(model, directory, f"{arch}_{name}", sparse=name.startswith("unstr"))
        index = interpreter.get_input_details()[0]["index"]
        interpreter.set_tensor(index, one)
        interpreter.invoke()
        litert_runs_fns[name] = interpreter.invoke
        summary = ts.summary(model, print_fn=None).total
        info[name] = {
            "parameters": model.count_params(),
            "flops": summary["flops"],
            "kernel_sparsity": kernel_sparsity(model),
            "tflite_bytes": size,
            "layers": [(type(layer).__name__, [tuple(w.shape) for w in layer.weights]) for layer in model.layers[1:]],
        }
        preparing.add(1)
    progress = keras.utils.Progbar(2 * rounds * (1 + len(FRACTIONS)), unit_name="round")
    keras_times = interleaved(keras_runs, rounds, keras_calls, progress)
    litert_times = interleaved(litert_runs_fns, rounds, litert_runs, progress)
    # Pruned against native, in pairs of their own: the closest comparison.
    paired = {}
    for fraction in FRACTIONS:
        names = (f"pruned_{fraction}", f"native_{fraction}")
        for backend, runs, calls in (("keras", keras_runs, keras_calls), ("litert", litert_runs_fns, litert_runs)):
            paired[backend, fraction] = interleaved({n: runs[n] for n in names}, rounds, calls, progress)

    rows = []
    for fraction in FRACTIONS:
        pruned, native, sparse = (f"{kind}_{fraction}" for kind in ("pruned", "native", "unstructured"))
        row = {
            "model": arch,
            "channels_removed": fraction,
            "parameter_ratio": info["dense"]["parameters"] / info[pruned]["parameters"],
            "flop_ratio": info["dense"]["flops"] / info[pruned]["flops"],
            "same_as_native": info[pruned]["layers"] == info[native]["layers"]
            and info[pruned]["flops"] == info[native]["flops"],
            "tflite_bytes": {k: info[k]["tflite_bytes"] for k in ("dense", pruned, native, sparse)},
            "unstructured_kernel_sparsity": info[sparse]["kernel_sparsity"],
        }
        for backend, times in (("keras", keras_times), ("litert", litert_times)):
            for statistic, reduce in (("", median), ("_best", min)):
                seconds = {k: reduce(times[k]) for k in ("dense", pruned, native, sparse)}
                row[f"{backend}_ms{statistic}"] = {k: 1000 * v for k, v in seconds.items()}
                row[f"{backend}_speedup_pruned{statistic}"] = seconds["dense"] / seconds[pruned]
                row[f"{backend}_speedup_native{statistic}"] = seconds["dense"] / seconds[native]
                pair = {k: reduce(v) for k, v in paired[backend, fraction].items()}
                row[f"{backend}_pruned_over_native{statistic}"] = pair[pruned] / pair[native]
                row[f"{backend}_speedup_unstructured{statistic}"] = seconds["dense"] / seconds[sparse]
        rows.append(row)
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(row["model"] for row in rows))
    fig, axes = plt.subplots(len(archs), 2, figsize=(11, 4 * len(archs)), squeeze=False)
    for r, arch in enumerate(archs):
        mine = [row for row in rows if row["model"] == arch]
        labels = [f"{int(100 * row['channels_removed'])}%" for row in mine]
        positions = np.arange(len(mine))
        for c, backend in enumerate(("keras", "litert")):
            ax = axes[r][c]
            bars = {
                "FLOP ratio": [row["flop_ratio"] for row in mine],
                "surgery": [row[f"{backend}_speedup_pruned"] for row in mine],
                "native": [row[f"{backend}_speedup_native"] for row in mine],
                "unstructured": [row[f"{backend}_speedup_unstructured"] for row in mine],
            }
            for k, (label, values) in enumerate(bars.items()):
                ax.bar(positions + (k - 1.5) * 0.2, values, 0.2, label=label)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_xticks(positions, labels)
            ax.set_xlabel("channels removed")
            ax.set_ylabel("speed-up over dense (x)")
            title = "Keras CPU, batch 64" if backend == "keras" else "LiteRT, batch 1"
            ax.set_title(f"{arch}: {title}")
            ax.legend(fontsize=8)
    fig.suptitle(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds per backend")
    parser.add_argument("--keras-calls", type=int, default=3, help="batch-64 Keras calls per round")
    parser.add_argument("--litert-runs", type=int, default=20, help="batch-1 invocations per LiteRT round")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for arch in args.models:
            print(f"{arch}: building, pruning and converting {1 + 3 * len(FRACTIONS)} models, then timing")
            rows += measure(arch, args.rounds, args.keras_calls, args.litert_runs, directory)
    payload = {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "settings": {"rounds": args.rounds, "keras_calls": args.keras_calls, "litert_runs": args.litert_runs,
                     "keras_batch": KERAS_BATCH,
                     "litert_threads": 1, "input_shape": INPUT_SHAPE},
        "results": rows,
    }
    print(f"wrote {write_json('structured_speed', payload)}")
    plot(rows, RESULTS / "structured_speed.png")
    for row in rows:
        print(
            f"{row['model']:>20} -{int(100 * row['channels_removed'])}%: FLOPs /{row['flop_ratio']:.2f}, "
            f"Keras x{row['keras_speedup_pruned']:.2f} (native x{row['keras_speedup_native']:.2f}, "
            f"pruned/native {row['keras_pruned_over_native']:.3f}, "
            f"unstructured x{row['keras_speedup_unstructured']:.2f}), "
            f"LiteRT x{row['litert_speedup_pruned']:.2f} (native x{row['litert_speedup_native']:.2f}, "
            f"pruned/native {row['litert_pruned_over_native']:.3f}, "
            f"unstructured x{row['litert_speedup_unstructured']:.2f})"
        )


if __name__ == "__main__":
    main()
