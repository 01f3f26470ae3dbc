"""FreezeNet vs SNIP vs dense on Fashion-MNIST (or the embedded digits): accuracy, compression, file size, step time.

One recipe for every run: the same initial weights (drawn from `--seed` with
`tfsparse.methods.reinitialize`, which FreezeNet and SNIP also use), the same
single scoring batch, the same training batches in the same order, and
`tfsparse.optimizers.cosine_sgd(steps, weight_decay=5e-4)` (SGD with momentum 0.9, learning rate
0.1 with cosine decay to 0, weight decay 5e-4), batch 100, `--epochs` epochs. SNIP keeps exactly the weights FreezeNet
trains at the same rate (same k) and zeroes the rest; FreezeNet freezes them
at their random init. The compression factor is the paper's: all parameters
over trained weights plus biases.

Also measured: the compact checkpoint (`tfsparse.export.save_compact`)
against the dense model's `.keras` file, a bit-exact reload of it, and the
training step time of FreezeNet at the highest rate against dense, in
interleaved rounds (median of per-step times).

`--data digits` runs the same comparison on the embedded 8x8 digits (resized
to 16x16, LeNet-5-Caffe's smallest input), e.g. the claim that frozen random
weights beat zeros at freeze rate 0.99 after two epochs, as the `freezenet`
job shows it: `--data digits --models lenet_300_100 --rates 0.9 0.99 --epochs 2`.

    python benchmarks/freezenet.py [--epochs 5] [--models lenet_300_100 lenet5_caffe]
                                   [--rates 0.9 0.95 0.99 0.995] [--seed 0] [--rounds 7]
                                   [--data fashion_mnist|digits]
    python benchmarks/freezenet.py --step-time-only [--rounds 15]

Writes benchmarks/results/freezenet.json and freezenet.png (with `--data
digits`: freezenet_digits.json and .png); with `--step-time-only`, only the
step times (at the highest rate), to benchmarks/results/freezenet_step_time.json.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import RESULTS, machine, median, timed, write_json  # noqa: E402
from tfsparse.methods.freezenet import trainable_count  # noqa: E402

MODELS = {"lenet_300_100": ts.models.lenet_300_100, "lenet5_caffe": ts.models.lenet5_caffe}
RATES = (0.9, 0.95, 0.99, 0.995)
BATCH = 100
DATA = ("fashion_mnist", "digits")
# Images smaller than LeNet-5-Caffe's 16x16 minimum are resized to it.
IMAGE_SIZE = {"digits": (16, 16)}
TIMING_STEPS = 40


def datasets(seed, data):
    """Fresh datasets, so every run sees the same batches in the same order."""
    image_size = IMAGE_SIZE.get(data)
    train = ts.data.load(data, "train", BATCH, shuffle=True, seed=seed, image_size=image_size)
    test = ts.data.load(data, "test", 1000, image_size=image_size)
    return train, test


def builder(arch, data):
    """A function building `arch` for the images and classes of `data`."""
    shape, classes = ts.data.describe(data, image_size=IMAGE_SIZE.get(data))
    return lambda: MODELS[arch](shape, classes)


def compile_model(model, steps):
    model.compile(
        ts.optimizers.cosine_sgd(steps, weight_decay=5e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train(model, epochs, seed, data):
    train_ds, test_ds = datasets(seed, data)
    compile_model(model, epochs * sum(1 for _ in train_ds))
    start = time.perf_counter()
    model.fit(train_ds, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    return float(model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]), seconds


def kernel_size(model):
    return sum(int(np.prod(w.shape)) for w in ts.walk.prunable_weights(model).values())


def run_model(arch, data, rates, epochs, seed, rounds, workdir, progress):
    build = builder(arch, data)
    score_batch = tuple(np.asarray(t) for t in next(iter(datasets(seed, data)[0])))
    dense = ts.methods.reinitialize(build(), seed)
    size = kernel_size(dense)
    dense_file = os.path.join(workdir, f"{arch}_dense.keras")
    dense.save(dense_file)  # at init: the size does not depend on the values
    accuracy, seconds = train(dense, epochs, seed, data)
    progress.add(1)
    result = {"dense": {"accuracy": accuracy, "seconds": seconds, "keras_bytes": os.path.getsize(dense_file)},
              "kernel_weights": size, "parameters": dense.count_params(), "freezenet": {}, "snip": {}}
    for rate in rates:
        trained = trainable_count(rate, size)
        frozen = ts.freezenet(build(), rate, score_batch, seed=seed)
        factor = ts.summary(frozen, print_fn=None).total["compression"]
        accuracy, seconds = train(frozen, epochs, seed, data)
        path = os.path.join(workdir, f"{arch}_{rate}.tfsparse")
        ts.export.save_compact(frozen, path)
        x = score_batch[0]
        reloaded = ts.export.load_compact(path)
        bit_exact = bool(np.array_equal(reloaded.predict(x, verbose=0), frozen.predict(x, verbose=0)))
        compact_bytes = os.path.getsize(path)
        frozen_result = result["freezenet"][str(rate)] = {
            "accuracy": accuracy, "seconds": seconds, "trained_weights": trained, "compression": factor,
            "compact_bytes": compact_bytes, "dense_keras_over_compact": result["dense"]["keras_bytes"] / compact_bytes,
            "compact_reload_bit_exact": bit_exact,
        }
        progress.add(1)
        pruned = ts.snip(build(), (size - trained) / size, score_batch, seed=seed)
        accuracy, seconds = train(pruned, epochs, seed, data)
        kept = result["parameters"] - size + trained
        result["snip"][str(rate)] = {"accuracy": accuracy, "seconds": seconds, "kept_weights": trained,
                                     "compression": result["parameters"] / kept}
        frozen_result["minus_snip_points"] = 100 * (frozen_result["accuracy"] - accuracy)
        progress.add(1)
    result["step_time"] = step_time(build, max(rates), seed, score_batch, rounds)
    return result


def step_time(build, rate, seed, score_batch, rounds):
    """Median training step time of FreezeNet and dense, measured in interleaved rounds.

    Both wall-clock time and the process's CPU time: on a machine shared with
    other work, CPU time is the steadier of the two.
    """
    rng = np.random.default_rng(seed)
    models = {"dense": ts.methods.reinitialize(build(), seed), "freezenet": ts.freezenet(build(), rate, score_batch, seed=seed)}
    x = rng.random((TIMING_STEPS * BATCH, *models["dense"].input_shape[1:]), dtype=np.float32)
    y = rng.integers(0, models["dense"].output_shape[-1], TIMING_STEPS * BATCH)
    runs = {}
    for name, model in models.items():
        compile_model(model, 10 * TIMING_STEPS)
        runs[name] = lambda model=model: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
        runs[name]()  # trace and warm up
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.process_time()
            times[name].append(timed(run) / TIMING_STEPS * 1000.0)
            cpu[name].append((time.process_time() - start) / TIMING_STEPS * 1000.0)
    ms = {name: median(values) for name, values in times.items()}
    cpu_ms = {name: median(values) for name, values in cpu.items()}
    return {"rate": rate, "step_ms_median": ms, "step_ms_all": times, "freezenet_over_dense": ms["freezenet"] / ms["dense"],
            "cpu_ms_median": cpu_ms, "cpu_ms_all": cpu, "freezenet_over_dense_cpu": cpu_ms["freezenet"] / cpu_ms["dense"]}


def plot(results, data, path):
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (arch, result) in zip(axes[0], results.items()):
        for method, style in (("freezenet", "o-"), ("snip", "s--")):
            runs = result[method]
            ax.plot([r["compression"] for r in runs.values()], [r["accuracy"] for r in runs.values()], style, label=method)
            for rate, r in runs.items():
                ax.annotate(rate, (r["compression"], r["accuracy"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.axhline(result["dense"]["accuracy"], color="grey", lw=0.8, label="dense")
        ax.set_xscale("log")
        ax.set_title(f"{arch} on {data}")
        ax.set_xlabel("compression factor (all parameters / trained parameters)")
        ax.set_ylabel("test accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(MODELS))
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the step time measurement")
    parser.add_argument("--step-time-only", action="store_true", help="measure the training step times only")
    parser.add_argument("--data", default=DATA[0], choices=DATA, help="fashion_mnist, or the embedded digits")
    args = parser.parse_args()
    if args.step_time_only:
        return step_times_only(args)
    progress = keras.utils.Progbar(len(args.models) * (1 + 2 * len(args.rates)), unit_name="run")
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for arch in args.models:
            results[arch] = run_model(arch, args.data, args.rates, args.epochs, args.seed, args.rounds, workdir, progress)
    payload = {
        "recipe": {
            "data": {"fashion_mnist": "fashion_mnist (60k train, 10k test)",
                     "digits": "digits (1,437 train, 360 test), resized to 16x16"}[args.data],
            "epochs": args.epochs, "batch_size": BATCH,
            "optimizer": "tfsparse.optimizers.cosine_sgd(steps, weight_decay=5e-4): SGD momentum 0.9, lr 0.1 cosine decay to 0, "
                         "weight decay 5e-4",
            "init": f"reinitialize(model, seed={args.seed}) for dense, SNIP and FreezeNet",
            "scoring": "one batch of 100 training examples, the same for SNIP and FreezeNet",
            "snip_mask": "the same k as FreezeNet: ceil((1 - rate) * kernel weights) kept",
        },
        "machine": machine(),
        "results": results,
    }
    name = "freezenet" if args.data == DATA[0] else f"freezenet_{args.data}"
    path = write_json(name, payload)
    plot(results, args.data, RESULTS / f"{name}.png")
    for arch, r in results.items():
        dense = r["dense"]["accuracy"]
        print(f"\n{arch}: dense {dense:.4f}, dense .keras {r['dense']['keras_bytes']:,} bytes")
        for rate in args.rates:
            f, s = r["freezenet"][str(rate)], r["snip"][str(rate)]
            print(f"  rate {rate}: x{f['compression']:.1f}  FreezeNet {f['accuracy']:.4f} ({f['accuracy'] / dense:.1%} of dense)"
                  f"  SNIP {s['accuracy']:.4f} ({f['minus_snip_points']:+.2f} points)  compact {f['compact_bytes']:,} bytes "
                  f"(dense .keras / compact = {f['dense_keras_over_compact']:.1f}, bit-exact reload {f['compact_reload_bit_exact']})")
        t = r["step_time"]
        print(f"  step time at rate {t['rate']}: FreezeNet / dense = {t['freezenet_over_dense']:.3f} wall-clock "
              f"({t['step_ms_median']['freezenet']:.2f} vs {t['step_ms_median']['dense']:.2f} ms), "
              f"{t['freezenet_over_dense_cpu']:.3f} CPU time")
    print("wrote", path)


def step_times_only(args):
    rate = max(args.rates)
    results = {}
    for arch in args.models:
        score_batch = tuple(np.asarray(t) for t in next(iter(datasets(args.seed, args.data)[0])))
        results[arch] = step_time(builder(arch, args.data), rate, args.seed, score_batch, args.rounds)
        t = results[arch]
        print(f"{arch}: step time at rate {rate}: FreezeNet / dense = {t['freezenet_over_dense']:.3f} wall-clock "
              f"({t['step_ms_median']['freezenet']:.2f} vs {t['step_ms_median']['dense']:.2f} ms), "
              f"{t['freezenet_over_dense_cpu']:.3f} CPU time")
    payload = {"batch_size": BATCH, "steps_per_round": TIMING_STEPS, "rounds": args.rounds, "machine": machine(),
               "results": results}
    print("wrote", write_json("freezenet_step_time", payload))


if __name__ == "__main__":
    main()
