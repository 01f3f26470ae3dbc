"""Training step time and memory: the pruning overhead of tfsparse (Keras 3) and of TFMOT (tf-keras).

Overheads are ratios to the dense model of the same framework and compiler:
tfsparse to dense Keras 3, tfsparse under XLA (`jit_compile=True`, what GPU
users get by default) to dense Keras 3 under XLA, TFMOT to dense tf-keras,
FreezeNet to dense Keras 3. Models: LeNet-300-100, the small CNN, ResNet-20
and a Transformer-style block (Embedding + EinsumDense/Dense); TFMOT runs on
the first two (built with tf-keras), FreezeNet on LeNet-300-100.

The variants of one model run in one process, in interleaved rounds (dense,
tfsparse, dense XLA, ...) so that machine noise hits them alike; the result
is the ratio of median step times, in wall-clock time and in process CPU
time (the steadier of the two on a busy machine), and the median (with
quartiles) of the per-round CPU-time ratios, each of two runs seconds
apart (paired: slow drifts of the machine cancel). Memory is the bytes of
each model's variables (kernels, masks, step counters, optimizer slots
excluded).

    python benchmarks/overhead.py [--rounds 7] [--steps 50] [--models lenet_300_100 ...] [--xla ...] [--output NAME]

Writes benchmarks/results/overhead.json (or NAME.json).
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
END_STEP = 1000
SEQUENCE, VOCABULARY, WIDTH = 32, 1000, 64


def transformer_block(K, num_classes=10):
    """A Transformer-style feed-forward block: Embedding, two EinsumDense with a residual, Dense."""
    inputs = K.Input((SEQUENCE,), dtype="int32")
    x = K.layers.Embedding(VOCABULARY, WIDTH)(inputs)
    h = K.layers.EinsumDense("btd,dh->bth", output_shape=(SEQUENCE, 4 * WIDTH), activation="relu")(x)
    h = K.layers.EinsumDense("bth,hd->btd", output_shape=(SEQUENCE, WIDTH))(h)
    x = K.layers.LayerNormalization()(K.layers.Add()([x, h]))
    x = K.layers.GlobalAveragePooling1D()(x)
    return K.Model(inputs, K.layers.Dense(num_classes)(x))


MODELS = {
    **ARCHITECTURES,
    "resnet20": lambda K: ts.models.resnet20((28, 28, 1)),
    "transformer_block": transformer_block,
}
WITH_TFMOT = ("lenet_300_100", "small_cnn")
WITH_FREEZENET = ("lenet_300_100",)


def data(arch, steps):
    rng = np.random.default_rng(0)
    if arch == "transformer_block":
        x = rng.integers(0, VOCABULARY, (steps * BATCH, SEQUENCE)).astype("int32")
    else:
        x = rng.random((steps * BATCH, 28, 28, 1), dtype="float32")
    return x, rng.integers(0, 10, steps * BATCH)


def keras3_models(arch, x, y, xla):
    """{variant: compiled Keras 3 model}: dense and tfsparse, each also under XLA if `xla`, and FreezeNet."""
    build = MODELS[arch]
    # Masks are recomputed every 100 steps (TFMOT's default frequency) up to step 1000, in both libraries.
    schedule = ts.schedules.PolynomialDecay(0.0, SPARSITY, 0, END_STEP)
    models = {}
    for suffix, jit in (("", False), ("_xla", True))[: 1 + xla]:
        models[f"dense_keras3{suffix}"] = _compiled(build(keras), jit)
        models[f"tfsparse{suffix}"] = _compiled(ts.prune_low_magnitude(build(keras), schedule), jit)
    if arch in WITH_FREEZENET:
        models["freezenet"] = _compiled(ts.freezenet(build(keras), SPARSITY, (x[:BATCH], y[:BATCH]), seed=0), False)
    return models


def _compiled(model, jit_compile):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss, jit_compile=jit_compile)
    return model


def tfmot_models(arch):
    """{variant: compiled tf-keras model}: dense and TFMOT-pruned."""
    tfk, tfmot = tf_keras()
    build = MODELS[arch]
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, SPARSITY, 0, END_STEP)
    models = {"dense_tf_keras": build(tfk), "tfmot_tf_keras": tfmot.sparsity.keras.prune_low_magnitude(build(tfk), pruning_schedule=schedule)}
    for model in models.values():
        model.compile(tfk.optimizers.SGD(0.01, momentum=0.9), tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    return models, [tfmot.sparsity.keras.UpdatePruningStep()]


def variable_bytes(model):
    """Bytes of a model's variables (of a Keras 3 or tf-keras model)."""
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype.name if hasattr(v.dtype, "name") else v.dtype).itemsize for v in model.weights))


def build_runs(arch, steps, xla):
    """Returns ({variant: run()}, {variant: variable bytes}); run() trains `steps` batches once."""
    x, y = data(arch, steps)
    models = keras3_models(arch, x, y, xla)
    callbacks = {}
    if arch in WITH_TFMOT:
        theirs, tfmot_callbacks = tfmot_models(arch)
        models.update(theirs)
        callbacks["tfmot_tf_keras"] = tfmot_callbacks

    def fit(name):
        model = models[name]
        return lambda: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=callbacks.get(name))

    return {name: fit(name) for name in models}, {name: variable_bytes(model) for name, model in models.items()}


RATIOS = {
    "tfsparse": ("tfsparse", "dense_keras3"),
    "tfsparse_xla": ("tfsparse_xla", "dense_keras3_xla"),
    "freezenet": ("freezenet", "dense_keras3"),
    "tfmot": ("tfmot_tf_keras", "dense_tf_keras"),
}


def measure(arch, rounds, steps, xla):
    runs, sizes = build_runs(arch, steps, xla)
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
    result = {"step_ms_median": step_ms, "cpu_ms_per_step_median": cpu_ms, "step_ms_all": wall, "variable_bytes": sizes}
    for label, (variant, base) in RATIOS.items():
        if variant in runs:
            result[f"overhead_{label}"] = step_ms[variant] / step_ms[base]
            result[f"cpu_overhead_{label}"] = cpu_ms[variant] / cpu_ms[base]
            # Paired: each round's ratio of two runs a few seconds apart, then the median and quartiles.
            paired = np.percentile([v / b for v, b in zip(cpu[variant], cpu[base])], [25, 50, 75])
            result[f"cpu_overhead_paired_{label}"] = float(paired[1])
            result[f"cpu_overhead_paired_quartiles_{label}"] = [float(paired[0]), float(paired[2])]
            result[f"memory_{label}"] = sizes[variant] / sizes[base]
    return result


def report(arch, r):
    ratios = ", ".join(
        f"{label}/dense = {r[f'overhead_{label}']:.3f} (CPU {r[f'cpu_overhead_{label}']:.3f}, paired "
        f"{r[f'cpu_overhead_paired_{label}']:.3f} [{r[f'cpu_overhead_paired_quartiles_{label}'][0]:.3f}, "
        f"{r[f'cpu_overhead_paired_quartiles_{label}'][1]:.3f}], bytes {r[f'memory_{label}']:.3f})"
        for label in RATIOS
        if f"overhead_{label}" in r
    )
    steps = ", ".join(f"{k} {v:.2f}" for k, v in r["step_ms_median"].items())
    return f"{arch}: {ratios} (ms/step: {steps})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--xla", nargs="*", default=sorted(MODELS), choices=sorted(MODELS),
                        help="the models also measured under XLA (default: all)")
    parser.add_argument("--output", default="overhead", help="name of the JSON file in benchmarks/results")
    args = parser.parse_args()
    results = {}
    for arch in args.models:
        results[arch] = measure(arch, args.rounds, args.steps, arch in args.xla)
        print(report(arch, results[arch]), flush=True)
    payload = {"load_average_at_end": os.getloadavg(), "batch_size": BATCH, "sparsity": SPARSITY, "rounds": args.rounds,
               "steps_per_round": args.steps, "end_step": END_STEP, "machine": machine(), "results": results}
    print("wrote", write_json(args.output, payload))


if __name__ == "__main__":
    main()
