"""How to apply a boolean mask to a weight in every training step: four formulas, timed in a training step.

The effective weight of `Masked` is the weight where the mask is set and 0
elsewhere; that of `Frozen` the weight where the mask is set and fixed
values elsewhere. Both are computed in every training step, with the
gradient passed straight through (`tfsparse.layers.wrapper.straight_through`).
Formulas:

- `broadcast_select`: `where(mask, w, 0)`, TensorFlow's SelectV2 with a scalar;
- `cast_multiply`: `w * cast(mask)` (what `Masked` computes);
- `select_same_shape`: `Select(mask, w, other)` with `other` of `w`'s
  shape (what `Frozen` computes, `other` its frozen values);
- `xla_cast_multiply`: `w * cast(mask)` in a function compiled by XLA
  (one fused kernel, launched from the uncompiled step).

Each formula runs in a LeNet-300-100 of Dense layers (batch 128, 90% of each
kernel masked) whose kernels it computes; their training steps and the plain
model's run interleaved in one process, rounds in reversed order every
round. The result is each formula's step over the plain step, in median
process CPU time, with a 95% bootstrap interval over the rounds.

    python benchmarks/mask_apply.py [--rounds 200] [--steps 20] [--output NAME]

Writes benchmarks/results/mask_apply.json (or NAME.json).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import cpu_timed, machine, median, write_json  # noqa: E402
from overhead import BATCH, bootstrap_ratio, training_step  # noqa: E402
from tfsparse.layers.wrapper import straight_through  # noqa: E402

SPARSITY = 0.9
WIDTHS = (300, 100, 10)

_fused_cast_multiply = tf.function(lambda mask, w: w * tf.cast(mask, w.dtype), jit_compile=True, autograph=False)

FORMULAS = {
    "broadcast_select": lambda mask, w, other: tf.where(mask, w, tf.constant(0, w.dtype)),
    "cast_multiply": lambda mask, w, other: w * tf.cast(mask, w.dtype),
    "select_same_shape": lambda mask, w, other: tf.raw_ops.Select(condition=mask, x=w, y=other),
    "xla_cast_multiply": lambda mask, w, other: _fused_cast_multiply(mask, w),
}


class FormulaDense(keras.layers.Dense):
    """A Dense layer whose kernel is `formula(mask, kernel, other)` in every call."""

    def __init__(self, units, formula, **kwargs):
        super().__init__(units, **kwargs)
        self.formula = formula

    def build(self, input_shape):
        super().build(input_shape)
        shape = tuple(self.kernel.shape)
        rng = np.random.default_rng(0)
        self.mask = self.add_weight(shape=shape, dtype="bool", trainable=False,
                                    initializer=keras.initializers.Constant(rng.random(shape) >= SPARSITY))
        self.other = tf.constant(rng.normal(size=shape).astype("float32"))

    def call(self, inputs):
        mask = tf.convert_to_tensor(self.mask)
        kernel = straight_through(lambda w: self.formula(mask, w, self.other), self.kernel)
        outputs = tf.matmul(inputs, kernel) + self.bias
        return self.activation(outputs)


def lenet_300_100(formula=None):
    inputs = keras.Input((784,))
    x = inputs
    for i, units in enumerate(WIDTHS):
        activation = "relu" if i < len(WIDTHS) - 1 else None
        layer = keras.layers.Dense(units, activation) if formula is None else FormulaDense(units, formula, activation=activation)
        x = layer(x)
    model = keras.Model(inputs, x)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--output", default="mask_apply", help="name of the JSON file in benchmarks/results")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x, y = rng.random((16 * BATCH, 784), dtype="float32"), rng.integers(0, 10, 16 * BATCH)
    steps = {"plain": training_step(lenet_300_100(), x, y)}
    steps.update({name: training_step(lenet_300_100(formula), x, y) for name, formula in FORMULAS.items()})
    cpu = {name: [] for name in steps}
    order = list(steps)
    for _ in range(args.rounds):
        for name in order:
            cpu[name].append(cpu_timed(lambda step=steps[name]: [step() for _ in range(args.steps)])[1] / args.steps * 1000)
        order.reverse()
    results = {}
    for name in FORMULAS:
        results[name] = {"cpu_over_plain": median(cpu[name]) / median(cpu["plain"]),
                         "cpu_over_plain_ci95": bootstrap_ratio(cpu[name], cpu["plain"]), "cpu_ms_median": median(cpu[name])}
        r = results[name]
        print(f"{name}: {r['cpu_over_plain']:.3f} [{r['cpu_over_plain_ci95'][0]:.3f}, {r['cpu_over_plain_ci95'][1]:.3f}] of the plain step")
    payload = {"batch_size": BATCH, "sparsity": SPARSITY, "rounds": args.rounds, "steps_per_round": args.steps,
               "plain_cpu_ms_median": median(cpu["plain"]), "machine": machine(), "results": results}
    print("wrote", write_json(args.output, payload))


if __name__ == "__main__":
    main()
