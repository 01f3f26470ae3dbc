"""Training step time: pruning overhead of tfsparse (Keras 3) and of TFMOT (tf-keras).

Overheads are ratios to the dense model of the same framework: tfsparse to dense
Keras 3, TFMOT to dense tf-keras.

All three run in one process, measured in interleaved rounds (dense, tfsparse,
TFMOT, dense, ...) so that machine noise hits them alike; the result is the
ratio of median step times, in wall-clock time and in process CPU time (the
steadier of the two on a busy machine).

    python benchmarks/overhead.py [--rounds 7] [--steps 50]

Writes benchmarks/results/overhead.json.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import ARCHITECTURES, cpu_timed, machine, median, tf_keras, write_json  # noqa: E402

BATCH = 128
SPARSITY = 0.9


def build_runs(arch, steps):
    """Returns {variant: run()} where run() trains `steps` batches once."""
    tfk, tfmot = tf_keras()
    x = np.random.rand(steps * BATCH, 28, 28, 1).astype("float32")
    y = np.random.randint(0, 10, steps * BATCH)
    build = ARCHITECTURES[arch]

    dense_tfk = build(tfk)
    dense_tfk.compile(tfk.optimizers.SGD(0.01, momentum=0.9), tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    dense = build(keras)
    dense.compile(keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Masks are recomputed every 100 steps, TFMOT's default frequency, in both libraries.
    ours = ts.prune_low_magnitude(build(keras), ts.schedules.PolynomialDecay(0.0, SPARSITY, 0, 10 * steps))
    ours.compile(keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    theirs = tfmot.sparsity.keras.prune_low_magnitude(
        build(tfk), pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(0.0, SPARSITY, 0, 10 * steps)
    )
    theirs.compile(tfk.optimizers.SGD(0.01, momentum=0.9), tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]

    def fit(model, **kwargs):
        return lambda: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, **kwargs)

    return {
        "dense_keras3": fit(dense),
        "tfsparse": fit(ours),
        "dense_tf_keras": fit(dense_tfk),
        "tfmot_tf_keras": fit(theirs, callbacks=callbacks),
    }


def measure(arch, rounds, steps):
    runs = build_runs(arch, steps)
    for run in runs.values():  # trace and warm up
        run()
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            w, c = cpu_timed(run)
            wall[name].append(w / steps * 1000.0)
            cpu[name].append(c / steps * 1000.0)
    step_ms = {name: median(t) for name, t in wall.items()}
    cpu_ms = {name: median(t) for name, t in cpu.items()}
    return {
        "step_ms_median": step_ms,
        "cpu_ms_per_step_median": cpu_ms,
        "step_ms_all": wall,
        "overhead_tfsparse": step_ms["tfsparse"] / step_ms["dense_keras3"],
        "overhead_tfmot": step_ms["tfmot_tf_keras"] / step_ms["dense_tf_keras"],
        "cpu_overhead_tfsparse": cpu_ms["tfsparse"] / cpu_ms["dense_keras3"],
        "cpu_overhead_tfmot": cpu_ms["tfmot_tf_keras"] / cpu_ms["dense_tf_keras"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "small_cnn"], choices=sorted(ARCHITECTURES))
    args = parser.parse_args()
    results = {}
    for arch in args.models:
        results[arch] = measure(arch, args.rounds, args.steps)
        r = results[arch]
        print(f"{arch}: tfsparse/dense = {r['overhead_tfsparse']:.3f} (CPU time {r['cpu_overhead_tfsparse']:.3f}), "
              f"TFMOT/dense tf-keras = {r['overhead_tfmot']:.3f} (CPU time {r['cpu_overhead_tfmot']:.3f}) "
              f"(ms/step: {', '.join(f'{k} {v:.2f}' for k, v in r['step_ms_median'].items())})")
    payload = {"load_average_at_end": os.getloadavg(), "batch_size": BATCH, "sparsity": SPARSITY, "rounds": args.rounds, "steps_per_round": args.steps,
               "machine": machine(), "results": results}
    print("wrote", write_json("overhead", payload))


if __name__ == "__main__":
    main()
