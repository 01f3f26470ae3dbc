"""What one Hutchinson sample costs: forward-over-reverse against double backward, and against a training step.

For each model, on one batch, the same Hessian-vector product (the
Hessian of the mean loss over all prunable kernels, in inference mode,
times a Rademacher vector) is computed in a `tf.function` two ways:

- forward-over-reverse: `tf.autodiff.ForwardAccumulator` around the
  gradient tape;
- double backward: the gradient of `grad . v`, with nested
  `tf.GradientTape`s (what `tfsparse.scoring.hessian_trace` uses: about 3%
  less CPU time here; the two are within the noise of wall time).

Both give the same product (checked). Each is timed next to a Keras
training step (`train_on_batch`, SGD) on the same batch; the calls
alternate, and each figure is the median of `--calls` calls after a
warm-up, in process CPU seconds (less disturbed than wall time when other
processes share the cores; wall medians are recorded too). The issue's
goal: one sample costs at most 3 training steps.

    python benchmarks/hessian.py [--calls 10] [--batch 32]

Writes benchmarks/results/hessian.json.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import cpu_timed, machine, median, write_json  # noqa: E402
from tfsparse.scoring import hessian  # noqa: E402
from tfsparse.scoring.saliency import _get_loss, _gradients, replica_step  # noqa: E402
from tfsparse.walk import prunable_weights  # noqa: E402

MODELS = {
    "resnet20": lambda: ts.models.resnet20(),
    "vgg_small": lambda: ts.models.vgg("small"),
}


def forward_over_reverse(loss_of, values, *vectors):
    """The Hessian of `loss_of` at `values` times `vectors`: the forward derivative of the gradient along them."""
    with tf.autodiff.ForwardAccumulator(values, list(vectors)) as accumulator:
        grads = _gradients(loss_of, values)
    return accumulator.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def sampler(model, compute):
    """A `tf.function` `(x, y, seed) -> Hv` for one Rademacher vector drawn from `seed`."""
    weights = list(prunable_weights(model).values())
    step = replica_step(model, weights, _get_loss(model, None), compute, training=False)
    shapes, dtypes = [tuple(w.shape) for w in weights], [w.dtype for w in weights]

    @tf.function
    def sample(x, y, seed):
        return step(x, y, None, *hessian.rademacher(shapes, dtypes, seed))

    return sample


def measure(name, calls, batch):
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, *model.input_shape[1:])).astype("float32"))
    y = tf.constant(rng.integers(0, 10, batch))
    seed = tf.constant([1, 2], dtype=tf.int64)
    variants = {
        "forward_over_reverse": lambda f=sampler(model, forward_over_reverse): f(x, y, seed),
        "double_backward": lambda f=sampler(model, hessian.hessian_vector_products): f(x, y, seed),
        "train_step": lambda: model.train_on_batch(x, y),
    }
    a, b = variants["forward_over_reverse"](), variants["double_backward"]()
    difference = max(float(np.max(np.abs(p - q)) / (np.max(np.abs(q)) + 1e-12)) for p, q in zip(a, b))
    times = {key: [] for key in variants}
    for key, fn in variants.items():  # warm-up: tracing
        fn()
    for _ in range(calls):
        for key, fn in variants.items():
            times[key].append(cpu_timed(fn))
    seconds = {key: median([cpu for _, cpu in values]) for key, values in times.items()}
    wall = {key: median([w for w, _ in values]) for key, values in times.items()}
    faster = min(("forward_over_reverse", "double_backward"), key=seconds.get)
    return {
        "parameters": model.count_params(),
        "seconds": seconds,
        "wall_seconds": wall,
        "max_relative_difference": difference,
        "faster": faster,
        "sample_over_train_step": seconds["double_backward"] / seconds["train_step"],
        "goal_at_most_3x": seconds["double_backward"] / seconds["train_step"] <= 3.0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    results = {name: measure(name, args.calls, args.batch) for name in MODELS}
    for name, result in results.items():
        s = result["seconds"]
        print(f"{name} (CPU time): forward-over-reverse {s['forward_over_reverse'] * 1e3:.1f} ms, double backward "
              f"{s['double_backward'] * 1e3:.1f} ms (used), train step {s['train_step'] * 1e3:.1f} ms; one sample = "
              f"{result['sample_over_train_step']:.2f} train steps "
              f"(max rel. diff {result['max_relative_difference']:.1e})")
    path = write_json("hessian", {"machine": machine(), "batch": args.batch, "calls": args.calls, "models": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
