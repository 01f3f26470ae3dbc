"""Weak scaling on MultiWorkerMirroredStrategy: steps per second with 1 and 2 worker processes on 127.0.0.1.

Each worker trains LeNet-300-100 with `tfsparse.distribute.train` on a fixed
per-worker batch (so 2 workers train a global batch twice as large), dense
and pruned (90%, masks recomputed every 100 steps as in TFMOT). The dense
model goes through the same loop, because Keras 3's `model.fit` fails under
MultiWorkerMirroredStrategy with 2 workers. Reported per run: steps per
second (median epoch after the first, which traces the step), and the
ratios pruned / dense step time at 1 and at 2 workers, and 2-worker /
1-worker step time.

On a 2-core machine, 2 workers share the cores that 1 worker had to itself,
and the gradient all-reduce goes through the loopback: the 2-worker figure
shows the cost of the collectives and of sharing, not a speed-up.

    python benchmarks/scaling.py [--steps 40] [--epochs 4] [--batch 128]

Writes benchmarks/results/scaling.json.
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import lenet_300_100, machine, median, write_json  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first one is not timed")
    parser.add_argument("--batch", type=int, default=128, help="batch per worker")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args, *args.worker)
    results = {}
    for workers in (1, 2):
        for variant in ("dense", "pruned"):
            results[f"{variant}_{workers}_workers"] = _launch(args, variant, workers)
            print(f"{variant}, {workers} worker(s): {results[f'{variant}_{workers}_workers']:.2f} steps/s", flush=True)
    ratios = {
        "pruned_over_dense_step_time_1_worker": results["dense_1_workers"] / results["pruned_1_workers"],
        "pruned_over_dense_step_time_2_workers": results["dense_2_workers"] / results["pruned_2_workers"],
        "two_over_one_worker_step_time_dense": results["dense_1_workers"] / results["dense_2_workers"],
        "two_over_one_worker_step_time_pruned": results["pruned_1_workers"] / results["pruned_2_workers"],
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.3f}")
    path = write_json("scaling", {"steps_per_second": results, "ratios": ratios, "steps": args.steps,
                                  "epochs": args.epochs, "batch_per_worker": args.batch, "machine": machine()})
    print(f"Wrote {path}")


def _launch(args, variant, workers):
    """Runs `workers` worker processes of `variant`; returns the chief's steps per second."""
    ports = []
    for _ in range(workers):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "chief.json"
        processes = [
            subprocess.Popen(
                [sys.executable, __file__, "--steps", str(args.steps), "--epochs", str(args.epochs),
                 "--batch", str(args.batch), "--worker", variant, str(out)],
                env=dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
            for i in range(workers)
        ]
        codes = [p.wait() for p in processes]
        if any(codes):
            raise SystemExit(f"a {variant} worker failed: exit codes {codes}")
        return json.loads(out.read_text())["steps_per_second"]


def _worker(args, variant, out):
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    size = args.batch * strategy.num_replicas_in_sync
    rng = np.random.RandomState(0)
    x = rng.rand(args.steps * size, 28, 28, 1).astype("float32")
    y = rng.randint(0, 10, args.steps * size)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(size, drop_remainder=True).cache()
    with strategy.scope():
        model = lenet_300_100(keras)
        if variant == "pruned":
            schedule = ts.schedules.PolynomialDecay(0.0, 0.9, 0, 10 * args.steps * args.epochs)
            model = ts.prune_low_magnitude(model, schedule)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = _EpochTimer()
    ts.distribute.train(model, dataset, epochs=args.epochs, strategy=strategy, callbacks=[timer], verbose=0)
    if strategy.cluster_resolver.task_id == 0:
        pathlib.Path(out).write_text(json.dumps({"steps_per_second": args.steps / median(timer.seconds[1:])}))


class _EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


if __name__ == "__main__":
    main()
