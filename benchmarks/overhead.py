"""Training step time and memory: the pruning overhead of tfsparse (Keras 3) and of TFMOT (tf-keras).

Overheads are ratios to the dense model of the same framework and compiler:
tfsparse to dense Keras 3, tfsparse under XLA (`jit_compile=True`, what GPU
users get by default) to dense Keras 3 under XLA, TFMOT to dense tf-keras,
FreezeNet to dense Keras 3. Models: LeNet-300-100, the small CNN, ResNet-20
and a Transformer-style block (Embedding + EinsumDense/Dense); TFMOT runs on
the first two (built with tf-keras), FreezeNet on LeNet-300-100. Pruned
models recompute their masks every 100 steps (TFMOT's default frequency)
throughout, so the mask updates are part of the per-step cost. On
LeNet-300-100 a tfsparse model with fixed masks (set once, no schedule)
splits that cost in two: the masks' (fixed masks over dense) and the
schedule's (step counter, schedule test and mask updates: tfsparse over
fixed masks).

What is timed is each model's compiled training step, called on a dataset
iterator as `fit` calls it (`fit`'s own per-call set-up, the same for every
variant, would dilute the ratios). The variants of one model run in one
process, in interleaved rounds whose order reverses every round, so that
machine noise hits them alike; each round runs a few steps (about a quarter
second of the dense model's). The result is the ratio of median step times,
in process CPU time (the steadier clock on a busy machine) with a 95%
bootstrap interval over the rounds, and in wall-clock time. Ratios differ
between processes by more than these intervals; `--processes N` measures
each model in N fresh processes and reports the median ratio and the
range. Memory is the bytes of each model's variables (kernels, masks, step
counters; optimizer slots excluded).

    python benchmarks/overhead.py [--rounds 60] [--models lenet_300_100 ...] [--xla ...] [--threads N] [--processes N] [--output NAME]

Writes benchmarks/results/overhead.json (or NAME.json).
"""

import argparse
import multiprocessing
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfsparse as ts  # noqa: E402
from tfsparse.scoring.magnitude import topk_mask  # noqa: E402
from common import ARCHITECTURES, cpu_timed, machine, median, tf_keras, write_json  # noqa: E402

BATCH = 128
BATCHES = 16
SPARSITY = 0.9
FREQUENCY = 100
ROUND_SECONDS = 0.25
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
WITH_FIXED_MASKS = ("lenet_300_100",)


def data(arch):
    rng = np.random.default_rng(0)
    if arch == "transformer_block":
        x = rng.integers(0, VOCABULARY, (BATCHES * BATCH, SEQUENCE)).astype("int32")
    else:
        x = rng.random((BATCHES * BATCH, 28, 28, 1), dtype="float32")
    return x, rng.integers(0, 10, BATCHES * BATCH)


def keras3_models(arch, x, y, xla):
    """{variant: compiled Keras 3 model}: dense and tfsparse, each also under XLA if `xla`, and FreezeNet."""
    build = MODELS[arch]
    models = {}
    for suffix, jit in (("", False), ("_xla", True))[: 1 + xla]:
        schedule = ts.schedules.ConstantSparsity(SPARSITY, begin_step=0, frequency=FREQUENCY)
        models[f"dense_keras3{suffix}"] = _compiled(build(keras), jit)
        models[f"tfsparse{suffix}"] = _compiled(ts.prune_low_magnitude(build(keras), schedule), jit)
    if arch in WITH_FREEZENET:
        models["freezenet"] = _compiled(ts.freezenet(build(keras), SPARSITY, (x[:BATCH], y[:BATCH]), seed=0), False)
    if arch in WITH_FIXED_MASKS:
        models["tfsparse_fixed_masks"] = _compiled(fixed_masks(build(keras)), False)
    return models


def fixed_masks(model):
    """`model` pruned by tfsparse without a schedule, its masks set once to `SPARSITY` by weight magnitude."""
    pruned = ts.prune_low_magnitude(model)
    for layer in pruned.layers:
        if isinstance(layer, ts.layers.Masked):
            layer.set_masks([topk_mask(tf.abs(w), SPARSITY, min_kept=1) for w in layer.prunable_weights])
    return pruned


def _compiled(model, jit_compile):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss, jit_compile=jit_compile)
    return model


def tfmot_models(arch):
    """({variant: compiled tf-keras model}, callbacks): dense and TFMOT-pruned."""
    tfk, tfmot = tf_keras()
    build = MODELS[arch]
    schedule = tfmot.sparsity.keras.ConstantSparsity(SPARSITY, begin_step=0, frequency=FREQUENCY)
    models = {"dense_tf_keras": build(tfk), "tfmot_tf_keras": tfmot.sparsity.keras.prune_low_magnitude(build(tfk), pruning_schedule=schedule)}
    for model in models.values():
        model.compile(tfk.optimizers.SGD(0.01, momentum=0.9), tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    return models, [tfmot.sparsity.keras.UpdatePruningStep()]


def variable_bytes(model):
    """Bytes of a model's variables (of a Keras 3 or tf-keras model)."""
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype.name if hasattr(v.dtype, "name") else v.dtype).itemsize for v in model.weights))


def training_step(model, x, y, callbacks=None):
    """Returns `step()`, which runs one compiled training step of `model` as `fit` does.

    One `fit` of one batch first builds the model's optimizer and training
    function and runs the callbacks' set-up (TFMOT's `UpdatePruningStep`
    starts its step counters there); the step then runs on an iterator.
    """
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0, callbacks=callbacks)
    function = model.make_train_function()
    batches = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH, drop_remainder=True).repeat())
    return lambda: function(batches)


def build_steps(arch, xla):
    """Returns ({variant: step()}, {variant: variable bytes})."""
    x, y = data(arch)
    models = keras3_models(arch, x, y, xla)
    callbacks = {}
    if arch in WITH_TFMOT:
        theirs, tfmot_callbacks = tfmot_models(arch)
        models.update(theirs)
        callbacks["tfmot_tf_keras"] = tfmot_callbacks
    steps = {name: training_step(model, x, y, callbacks.get(name)) for name, model in models.items()}
    return steps, {name: variable_bytes(model) for name, model in models.items()}


RATIOS = {
    "tfsparse": ("tfsparse", "dense_keras3"),
    "tfsparse_xla": ("tfsparse_xla", "dense_keras3_xla"),
    "freezenet": ("freezenet", "dense_keras3"),
    "fixed_masks": ("tfsparse_fixed_masks", "dense_keras3"),
    "schedule": ("tfsparse", "tfsparse_fixed_masks"),
    "tfmot": ("tfmot_tf_keras", "dense_tf_keras"),
}


def bootstrap_ratio(variant, base, samples=2000, seed=0):
    """95% interval of median(variant) / median(base), resampling the rounds (the pairs) with replacement."""
    variant, base = np.asarray(variant), np.asarray(base)
    rounds = np.random.default_rng(seed).integers(0, len(base), (samples, len(base)))
    ratios = np.median(variant[rounds], axis=1) / np.median(base[rounds], axis=1)
    return [float(r) for r in np.percentile(ratios, [2.5, 97.5])]


def measure(arch, rounds, steps_per_round, xla):
    steps, sizes = build_steps(arch, xla)
    for step in steps.values():  # trace, compile and warm up
        for _ in range(3):
            step()
    if steps_per_round is None:
        _, cpu = cpu_timed(steps[next(iter(steps))])
        steps_per_round = max(1, round(ROUND_SECONDS / cpu))
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    order = list(steps)
    for _ in range(rounds):
        for name in order:
            w, c = cpu_timed(lambda step=steps[name]: [step() for _ in range(steps_per_round)])
            wall[name].append(w / steps_per_round * 1000.0)
            cpu[name].append(c / steps_per_round * 1000.0)
        order.reverse()
    step_ms = {name: median(t) for name, t in wall.items()}
    cpu_ms = {name: median(t) for name, t in cpu.items()}
    result = {"steps_per_round": steps_per_round, "step_ms_median": step_ms, "cpu_ms_per_step_median": cpu_ms,
              "cpu_ms_per_step_all": cpu, "variable_bytes": sizes}
    for label, (variant, base) in RATIOS.items():
        if variant in steps and base in steps:
            result[f"overhead_{label}"] = step_ms[variant] / step_ms[base]
            result[f"cpu_overhead_{label}"] = cpu_ms[variant] / cpu_ms[base]
            result[f"cpu_overhead_ci95_{label}"] = bootstrap_ratio(cpu[variant], cpu[base])
            result[f"memory_{label}"] = sizes[variant] / sizes[base]
    return result


def report(arch, r):
    ratios = ", ".join(
        f"{'/'.join(RATIOS[label])} = CPU {r[f'cpu_overhead_{label}']:.3f} [{r[f'cpu_overhead_ci95_{label}'][0]:.3f}, "
        f"{r[f'cpu_overhead_ci95_{label}'][1]:.3f}] (wall {r[f'overhead_{label}']:.3f}, bytes {r[f'memory_{label}']:.3f})"
        for label in RATIOS
        if f"overhead_{label}" in r
    )
    steps = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_step_median"].items())
    return f"{arch}: {ratios} (CPU ms/step: {steps}; {r['steps_per_round']} steps per round)"


def measure_in_processes(arch, processes, rounds, steps_per_round, xla, threads):
    """`measure` in `processes` fresh processes, one after another; the ratios' median and range over them.

    One process's interval covers the noise between its rounds, not what
    differs between processes (where each model's memory lands, the state of
    the thread pools): several processes show that spread.
    """
    context = multiprocessing.get_context("spawn")
    runs = []
    for _ in range(processes):
        with context.Pool(1) as pool:
            runs.append(pool.apply(_measure_with_threads, (threads, arch, rounds, steps_per_round, xla)))
        print("  " + report(arch, runs[-1]), flush=True)
    result = {"processes": runs}
    for label in RATIOS:
        ratios = [run[f"cpu_overhead_{label}"] for run in runs if f"cpu_overhead_{label}" in run]
        if ratios:
            result[f"cpu_overhead_{label}"] = float(np.median(ratios))
            result[f"cpu_overhead_range_{label}"] = [min(ratios), max(ratios)]
    return result


def _measure_with_threads(threads, *args):
    set_threads(threads)
    return measure(*args)


def set_threads(threads):
    """Sets TensorFlow's intra- and inter-op threads (None: TensorFlow's choice)."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--steps", type=int, default=None,
                        help=f"steps per round (default: about {ROUND_SECONDS} s of the dense model's)")
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--xla", nargs="*", default=sorted(MODELS), choices=sorted(MODELS),
                        help="the models also measured under XLA (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow's intra- and inter-op threads (default: TensorFlow's choice)")
    parser.add_argument("--processes", type=int, default=1,
                        help="measure each model in this many fresh processes and report the median ratio (default: 1, this process)")
    parser.add_argument("--output", default="overhead", help="name of the JSON file in benchmarks/results")
    args = parser.parse_args()
    results = {}
    for arch in args.models:
        if args.processes > 1:
            results[arch] = r = measure_in_processes(arch, args.processes, args.rounds, args.steps, arch in args.xla, args.threads)
            print(f"{arch}, median over {args.processes} processes: " + ", ".join(
                f"{'/'.join(RATIOS[label])} = CPU {r[f'cpu_overhead_{label}']:.3f} (range {r[f'cpu_overhead_range_{label}'][0]:.3f}"
                f"-{r[f'cpu_overhead_range_{label}'][1]:.3f})" for label in RATIOS if f"cpu_overhead_{label}" in r), flush=True)
        else:
            set_threads(args.threads)
            results[arch] = measure(arch, args.rounds, args.steps, arch in args.xla)
            print(report(arch, results[arch]), flush=True)
    payload = {"load_average_at_end": os.getloadavg(), "batch_size": BATCH, "sparsity": SPARSITY,
               "mask_update_frequency": FREQUENCY, "rounds": args.rounds, "threads": args.threads,
               "processes": args.processes, "machine": machine(), "results": results}
    print("wrote", write_json(args.output, payload))


if __name__ == "__main__":
    main()
