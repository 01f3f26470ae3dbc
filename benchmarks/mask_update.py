"""The time of one mask update next to one training step, for Dense layers of 1M, 4M and 16M weights.

A mask update is the wrappers' update path: scores `|w|` where the
boolean mask is set, then the new boolean mask that keeps the highest
scores (`topk_mask` for one layer, `global_topk_masks` for a whole model in
global scope). It is timed with tfsparse's linear-time selection ("after")
and with float masks and the selection by `tf.math.top_k` it replaced
("before", kept here as the reference), and
next to one SGD training step of the dense layer (or model) at batch 128.
Both selections give identical masks (checked at every size). Rounds are
interleaved; reported are medians of wall and process CPU seconds, the
update / step ratios, and the exponent of a log-log fit of update time
against size (1 is linear; memory traffic bends even linear work above 1
on this machine, so the fit of the update / step ratio is reported too:
0 when the update grows like the training step, whose work is linear in
the weights). The "xla" figures time the update and the step
inside `tf.function(jit_compile=True)`, where the selection bisects.

    python benchmarks/mask_update.py [--rounds 3] [--sparsity 0.9]

Writes benchmarks/results/mask_update.json.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfsparse as ts  # noqa: E402
from common import cpu_timed, machine, median, write_json  # noqa: E402

BATCH = 128
LAYER_WIDTHS = {"1M": 1024, "4M": 2048, "16M": 4096}
MODEL_WIDTHS = (1024, 2048, 2048, 2048)  # Dense 1024->2048->2048->2048: 10.5M weights


def reference_keep_highest(flat, keep):
    """The selection by `tf.math.top_k` (a sort for a large `keep`), ties to the lower index."""
    _, indices = tf.math.top_k(flat, k=keep, sorted=False)
    return tf.scatter_nd(indices[:, None], tf.ones_like(indices, flat.dtype), tf.shape(flat))


def reference_update(kernels, masks, sparsity):
    """`global_topk_masks(|w * mask|, sparsity, min_kept=1)` with the reference selection.

    With one kernel this is `topk_mask(|w * mask|, sparsity, min_kept=1)`.
    """
    parts = [tf.reshape(tf.abs(w * tf.cast(m, w.dtype)), [-1]) for w, m in zip(kernels, masks)]
    parts = [tf.where(reference_keep_highest(p, 1) > 0, float("inf"), p) for p in parts]
    flat = tf.concat(parts, axis=0)
    total = flat.shape[0]
    keep = tf.maximum(total - ts.scoring.magnitude.num_pruned(sparsity, total), len(parts))
    mask = reference_keep_highest(flat, keep)
    return [tf.reshape(p, tf.shape(w)) for p, w in zip(tf.split(mask, [p.shape[0] for p in parts]), kernels)]


def update(kernels, masks, sparsity):
    """The wrappers' update path: one layer (`topk_mask`) or a whole model (`global_topk_masks`), boolean masks."""
    scores = [tf.where(m, tf.abs(w), 0.0) for w, m in zip(kernels, masks)]
    if len(scores) == 1:
        return [ts.scoring.topk_mask(scores[0], sparsity, min_kept=1, dtype=tf.bool)]
    return ts.scoring.global_topk_masks(scores, sparsity, min_kept=1, dtype=tf.bool)


def dense_model(widths):
    """A stack of Dense layers, `widths[0]` inputs, one layer per following width."""
    return keras.Sequential([keras.Input((widths[0],))] + [keras.layers.Dense(w, use_bias=False) for w in widths[1:]])


def train_step(model, jit_compile):
    """One SGD step of `model` on a batch of 128, as a compiled function of no argument."""
    optimizer = keras.optimizers.SGD(0.01)
    optimizer.build(model.trainable_variables)
    x = tf.random.normal([BATCH, model.input_shape[-1]])
    y = tf.random.normal([BATCH, model.output_shape[-1]])

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    return step


def measure(widths, sparsity, rounds):
    """Median `(wall, cpu)` seconds of each timed function for the model of `widths`."""
    model = dense_model(widths)
    kernels = [layer.kernel for layer in model.layers]
    # The masks of a model already pruned to half the target, as between two updates.
    masks = [ts.scoring.topk_mask(tf.abs(k), sparsity / 2, dtype=tf.bool) for k in kernels]
    functions = {
        "step": train_step(model, jit_compile=False),
        "step_xla": train_step(model, jit_compile=True),
        "before": tf.function(lambda: reference_update(kernels, masks, sparsity)),
        "after": tf.function(lambda: update(kernels, masks, sparsity)),
        "after_xla": tf.function(lambda: update(kernels, masks, sparsity), jit_compile=True),
    }
    outputs = {name: fn() for name, fn in functions.items()}  # traces and compiles
    for name in ("after", "after_xla"):
        for got, expected in zip(outputs[name], outputs["before"]):
            np.testing.assert_array_equal(got.numpy(), expected.numpy(), err_msg=f"{name} differs from before")
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            times[name].append(cpu_timed(lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())))
    return {
        name: {"wall": median(w for w, _ in pairs), "cpu": median(c for _, c in pairs)} for name, pairs in times.items()
    }


def ratios(seconds):
    """Update / step ratios (wall and CPU) before and after, and the speed-up."""
    out = {}
    for clock in ("wall", "cpu"):
        out[f"before_over_step_{clock}"] = seconds["before"][clock] / seconds["step"][clock]
        out[f"after_over_step_{clock}"] = seconds["after"][clock] / seconds["step"][clock]
        out[f"after_xla_over_step_xla_{clock}"] = seconds["after_xla"][clock] / seconds["step_xla"][clock]
        out[f"before_over_after_{clock}"] = seconds["before"][clock] / seconds["after"][clock]
    return out


def growth_exponent(sizes, seconds):
    """The slope of log(seconds) against log(size): 1 for linear growth."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per model")
    parser.add_argument("--sparsity", type=float, default=0.9, help="target sparsity of the update")
    args = parser.parse_args()
    results = {"machine": machine(), "load_average": os.getloadavg(), "batch": BATCH, "sparsity": args.sparsity}
    layers = {}
    for label, width in LAYER_WIDTHS.items():
        seconds = measure((width, width), args.sparsity, args.rounds)
        layers[label] = {"weights": width * width, "seconds": seconds, "ratios": ratios(seconds)}
        print(label, {k: round(v, 3) for k, v in layers[label]["ratios"].items()}, flush=True)
    sizes = [layer["weights"] for layer in layers.values()]
    results["layers"] = layers
    results["growth_exponent"] = {
        f"{name}_{clock}": growth_exponent(sizes, [layer["seconds"][name][clock] for layer in layers.values()])
        for name in ("before", "after", "after_xla", "step")
        for clock in ("wall", "cpu")
    }
    for clock in ("wall", "cpu"):
        results["growth_exponent"][f"after_over_step_{clock}"] = growth_exponent(
            sizes, [layer["ratios"][f"after_over_step_{clock}"] for layer in layers.values()])
    print("growth exponents", {k: round(v, 2) for k, v in results["growth_exponent"].items()}, flush=True)
    seconds = measure(MODEL_WIDTHS, args.sparsity, args.rounds)
    results["global_model"] = {
        "widths": MODEL_WIDTHS,
        "weights": sum(a * b for a, b in zip(MODEL_WIDTHS, MODEL_WIDTHS[1:])),
        "seconds": seconds,
        "ratios": ratios(seconds),
    }
    print("global model", {k: round(v, 3) for k, v in results["global_model"]["ratios"].items()}, flush=True)
    print(write_json("mask_update", results))


if __name__ == "__main__":
    main()
