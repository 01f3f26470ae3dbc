"""Training step time of Centripetal SGD against plain SGD (the issue's goal: at most 1.1x).

ResNet-20 (32x32x3 inputs, CIFAR size) with every prunable channel group
clustered to half its width (the heaviest case: every kernel, bias and
BatchNorm vector is pulled), against the same model with
`keras.optimizers.SGD` (Nesterov momentum, the same learning rate; L2 as a
regularizer-free gradient term would only add to the C-SGD side). Both are
measured in interleaved rounds in one process (SGD, C-SGD, SGD, ...) so
that machine noise hits them alike; the result is the ratio of median step
times, in wall-clock time and in process CPU time (the steadier of the two
on a busy machine).

    python benchmarks/csgd_step.py [--rounds 3] [--steps 5] [--width 1.0]

Writes benchmarks/results/csgd_step.json.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import cpu_timed, machine, median, write_json  # noqa: E402

BATCH = 64
RATE = 0.05


def build_runs(steps, width):
    """Returns {variant: run()} where run() trains `steps` batches once."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, steps * BATCH)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(0)
    plain = ts.models.resnet20(width=width)
    plain.compile(keras.optimizers.SGD(RATE, momentum=0.9, nesterov=True), loss)
    keras.utils.set_random_seed(0)
    centripetal = ts.models.resnet20(width=width)
    clusters = ts.csgd.clusters(centripetal, 0.5, method="even")
    centripetal.compile(ts.optimizers.CentripetalSGD(clusters, RATE, centripetal_strength=0.1), loss)

    def fit(model):
        return lambda: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)

    return {"sgd": fit(plain), "csgd": fit(centripetal)}, centripetal.optimizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    runs, optimizer = build_runs(args.steps, args.width)
    for run in runs.values():  # trace and warm up
        run()
    pulled = len(optimizer.pulled)
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            w, c = cpu_timed(run)
            wall[name].append(w / args.steps * 1000.0)
            cpu[name].append(c / args.steps * 1000.0)
    step_ms = {name: median(t) for name, t in wall.items()}
    cpu_ms = {name: median(t) for name, t in cpu.items()}
    result = {
        "step_ms_median": step_ms,
        "cpu_ms_per_step_median": cpu_ms,
        "step_ms_all": wall,
        "ratio": step_ms["csgd"] / step_ms["sgd"],
        "cpu_ratio": cpu_ms["csgd"] / cpu_ms["sgd"],
        "pulled_variables": pulled,
    }
    print(f"resnet20 (width {args.width}, batch {BATCH}): C-SGD / SGD step = {result['ratio']:.3f} "
          f"(CPU time {result['cpu_ratio']:.3f}); ms/step: "
          f"{', '.join(f'{k} {v:.1f}' for k, v in step_ms.items())}; {pulled} variables pulled")
    payload = {"load_average_at_end": os.getloadavg(), "batch_size": BATCH, "width": args.width,
               "rounds": args.rounds, "steps_per_round": args.steps, "machine": machine(), "result": result}
    print("wrote", write_json("csgd_step", payload))


if __name__ == "__main__":
    main()
