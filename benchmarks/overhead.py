"""Training step time: dense Keras 3 vs tfsparse pruning vs TFMOT pruning (tf-keras).

All three run in one process, measured in interleaved rounds (dense, tfsparse,
TFMOT, dense, ...) so that machine noise hits them alike; the result is the
ratio of median step times.

    python benchmarks/overhead.py [--rounds 7] [--steps 50]

Writes benchmarks/results/overhead.json.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import ARCHITECTURES, machine, median, tf_keras, timed, write_json  # noqa: E402

BATCH = 128
SPARSITY = 0.9


def build_runs(arch, steps):
    """Returns {variant: run()} where run() trains `steps` batches once."""
    tfk, tfmot = tf_keras()
    x = np.random.rand(steps * BATCH, 28, 28, 1).astype("float32")
    y = np.random.randint(0, 10, steps * BATCH)
    build = ARCHITECTURES[arch]

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
        "tfmot_tf_keras": fit(theirs, callbacks=callbacks),
    }


def measure(arch, rounds, steps):
    runs = build_runs(arch, steps)
    for run in runs.values():  # trace and warm up
        run()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(timed(run) / steps * 1000.0)
    step_ms = {name: median(t) for name, t in times.items()}
    return {
        "step_ms_median": step_ms,
        "step_ms_all": times,
        "overhead_tfsparse": step_ms["tfsparse"] / step_ms["dense_keras3"],
        "overhead_tfmot": step_ms["tfmot_tf_keras"] / step_ms["dense_keras3"],
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
        print(f"{arch}: tfsparse/dense = {r['overhead_tfsparse']:.3f}, TFMOT/dense = {r['overhead_tfmot']:.3f} "
              f"(ms/step: {', '.join(f'{k} {v:.2f}' for k, v in r['step_ms_median'].items())})")
    payload = {"batch_size": BATCH, "sparsity": SPARSITY, "rounds": args.rounds, "steps_per_round": args.steps,
               "machine": machine(), "results": results}
    print("wrote", write_json("overhead", payload))


if __name__ == "__main__":
    main()
