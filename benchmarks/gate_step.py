"""Training step time of polarization gates: the gated model against the dense one, in one run.

ResNet-20 (width 0.5) on 32x32x3 batches of 128, Adam. The gated model is
`tfsparse.polarize(model, 0.5, steps=...)` with the regularizer active for the
whole measurement (no warm-up, no freeze), so every step pays for the gates,
the loss and the step counter. Dense and gated fits are measured in interleaved
rounds so that machine noise hits both alike; the result is the ratio of median
step times, wall-clock and process CPU time (the steadier on a busy machine).
The goal of issue 12 is a ratio of at most 1.15.

    python benchmarks/gate_step.py [--rounds 5] [--steps 10] [--width 0.5]

Writes benchmarks/results/gate_step.json.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import cpu_timed, machine, median, write_json  # noqa: E402

BATCH = 128
SHAPE = (32, 32, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--width", type=float, default=0.5)
    args = parser.parse_args()
    x = np.random.rand(args.steps * BATCH, *SHAPE).astype("float32")
    y = np.random.randint(0, 10, args.steps * BATCH)
    keras.utils.set_random_seed(0)
    dense = ts.models.resnet20(SHAPE, width=args.width)
    total = (args.rounds + 1) * args.steps
    gated = ts.polarize(dense, 0.5, steps=total, warmup=0.0, ramp=0.0, freeze=None)
    runs = {}
    for name, model in (("dense", dense), ("gated", gated)):
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)  # trace and warm up
        runs[name] = lambda model=model: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(cpu_timed(run))
    step = {name: {"wall": median(w for w, _ in t) / args.steps, "cpu": median(c for _, c in t) / args.steps}
            for name, t in times.items()}
    payload = {
        "model": f"resnet20(width={args.width}) on {SHAPE}", "batch": BATCH, "steps": args.steps,
        "rounds": args.rounds, "step_seconds": step,
        "ratio_wall": step["gated"]["wall"] / step["dense"]["wall"],
        "ratio_cpu": step["gated"]["cpu"] / step["dense"]["cpu"],
        "goal": 1.15, "machine": machine(),
    }
    print(f"gated/dense step time: {payload['ratio_wall']:.3f} (wall), {payload['ratio_cpu']:.3f} (CPU)")
    print("wrote", write_json("gate_step", payload))


if __name__ == "__main__":
    main()
