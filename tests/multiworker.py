"""Runs tfsparse methods on 2 MultiWorkerMirroredStrategy workers on 127.0.0.1, and in one process.

Imported by the tests: `run(methods, directory)` starts the two workers
(free ports, `TF_CONFIG` each, RING collectives on CPU) and one plain
process with the default strategy, all three running this file as a
script, waits for them (a failed worker gets its peer killed, which would
otherwise wait for it forever; a timeout kills all) and returns the saved variables of every method in every process:
`{"worker0" | "worker1" | "single": {method: {variable path: array}}}`.

As a script (`python multiworker.py DIRECTORY METHOD...`), it runs each
method in turn, in one strategy, and writes `DIRECTORY/<method>.npz`: the
variables of the trained model, or the scores a method returns. Every
method starts from the same seeded weights and data, so the processes
differ only in how the global batches are split.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfsparse as ts

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 16  # global batch: 8 examples per worker
EXAMPLES = 64  # 4 batches per epoch
TIMEOUT = 600  # seconds for the slowest process: generous, for a busy machine
ROLES = ("worker0", "worker1", "single")
CRASH_EXIT = 17  # the exit status of a worker that `crash_at_epoch` stops


def run(methods, directory, roles=ROLES, crash_at_epoch=None, timeout=TIMEOUT):
    """Runs `methods` on 2 workers and in one process; returns every process's variables.

    Args:
        methods: names of functions in `METHODS`.
        directory: a pathlib.Path for the result files (and the checkpoints
            of `resume`, shared by the two workers).
        roles: the processes to start, of `ROLES`.
        crash_at_epoch: `None`, or the epoch at whose start worker 1 exits
            in `resume`, once the chief has saved the epoch before; worker
            0, left waiting for it, is then killed.
        timeout: seconds before a hung process fails the run.

    Returns:
        `{role: {method: {variable path: array}}}`, or `{}` with
        `crash_at_epoch`.

    Raises:
        AssertionError: if a process fails (or, with `crash_at_epoch`,
            worker 1 does not stop as told) or a process outlives `timeout`;
            every process is killed first. The message shows the end of the
            processes' output.
    """
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    configs = {f"worker{i}": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)}
    configs["single"] = None
    env = {"worker1": {"MULTIWORKER_CRASH_AT_EPOCH": str(crash_at_epoch)}} if crash_at_epoch is not None else {}
    processes = {role: _start(role, configs[role], methods, directory, env.get(role, {})) for role in roles}
    codes = _wait(processes, directory, timeout)
    if crash_at_epoch is not None:
        assert codes["worker1"] == CRASH_EXIT, f"worker1 did not stop: {codes}\n{_tail(directory, 'worker1')}"
        return {}
    failed = {role: code for role, code in codes.items() if code != 0}
    assert not failed, f"processes failed {failed}:\n" + "\n".join(_tail(directory, role) for role in failed)
    return {role: {m: dict(np.load(directory / role / f"{m}.npz")) for m in methods} for role in roles}


def _wait(processes, directory, timeout):
    """Waits for every process; once a worker fails, kills the other one. Returns the exit codes."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in processes.values()):
        if any(p.poll() not in (None, 0) for role, p in processes.items() if role.startswith("worker")):
            _kill({role: p for role, p in processes.items() if role.startswith("worker")})
        if time.monotonic() > deadline:
            _kill(processes)
            raise AssertionError(f"hung for {timeout} s:\n" + "\n".join(_tail(directory, r) for r in processes))
        time.sleep(0.2)
    return {role: p.returncode for role, p in processes.items()}


def _start(role, config, methods, directory, extra_env):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", **extra_env)
    # The tfsparse under test: this checkout's, not whichever one is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["MULTIWORKER_CHECKPOINTS"] = str(directory / "checkpoints" / ("single" if config is None else "workers"))
    if config is not None:
        env["TF_CONFIG"] = config
    (directory / role).mkdir(parents=True, exist_ok=True)
    with open(directory / f"{role}.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, __file__, str(directory / role), *methods], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def _kill(processes):
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def _tail(directory, role, lines=30):
    text = (directory / f"{role}.log").read_text().splitlines()
    return f"--- {role} ---\n" + "\n".join(text[-lines:])


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# ---- the worker side: everything below runs in the started processes ----


def _data():
    rng = np.random.RandomState(0)
    x = rng.rand(EXAMPLES, 8, 8, 1).astype("float32")
    y = rng.randint(0, 10, EXAMPLES).astype("int32")
    return x, y


def _dataset():
    return tf.data.Dataset.from_tensor_slices(_data()).batch(BATCH, drop_remainder=True)


def _model():
    """A tiny CNN with named layers and weights drawn from NumPy, the same in every process."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="relu", name="fc")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name="tiny")
    rng = np.random.RandomState(1)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _compile(model, optimizer=None):
    model.compile(optimizer or keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def magnitude(strategy, scope="layer"):
    schedule = ts.schedules.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2)
    with strategy.scope():
        model = _compile(ts.prune_low_magnitude(_model(), schedule, scope=scope))
    ts.distribute.train(model, _dataset(), epochs=2, strategy=strategy, verbose=0)
    return model


def magnitude_global(strategy):
    return magnitude(strategy, scope="global")


def freezenet(strategy):
    with strategy.scope():
        model = _compile(ts.freezenet(_model(), 0.8, _dataset(), seed=3, batches=2))
    ts.distribute.train(model, _dataset(), epochs=1, strategy=strategy, verbose=0)
    return model


def snip(strategy):
    with strategy.scope():
        model = _compile(ts.snip(_model(), 0.8, _dataset(), batches=2))
    ts.distribute.train(model, _dataset(), epochs=1, strategy=strategy, verbose=0)
    return model


def jackpot(strategy):
    with strategy.scope():
        model = _compile(ts.lottery_jackpot(_model(), 0.8, seed=0), keras.optimizers.SGD(5.0))
    ts.distribute.train(model, _dataset(), epochs=2, strategy=strategy, verbose=0,
                        callbacks=[ts.callbacks.ShortRestriction(rate=0.5)])
    return model


def csgd(strategy):
    with strategy.scope():
        model = _model()
        plan = ts.csgd.clusters(model, 0.5, method="even")
        _compile(model, ts.optimizers.CentripetalSGD(plan, 0.05, centripetal_strength=0.5))
    ts.distribute.train(model, _dataset(), epochs=1, strategy=strategy, verbose=0)
    return model


def polarize(strategy):
    with strategy.scope():
        model = _compile(ts.polarize(_model(), sparsity=0.5, steps=8, warmup=0.0, ramp=0.25, freeze=0.5))
    ts.distribute.train(model, _dataset(), epochs=2, strategy=strategy, verbose=0)
    return model


def hessian(strategy):
    with strategy.scope():
        scores = ts.scoring.hessian_trace(_model(), _dataset(), samples=4, batches=2, seed=0, verbose=0)
    return {f"{path}/{field}": np.asarray(getattr(estimate, field)) for path, estimate in scores.items()
            for field in ("value", "stderr")}


class _Epochs(keras.callbacks.Callback):
    """Records the epochs run; exits at the start of epoch `crash_at`, once the chief has saved the epoch before."""

    def __init__(self, crash_at, checkpoints):
        super().__init__()
        self.crash_at, self.checkpoints, self.seen = crash_at, checkpoints, []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.crash_at:
            while not (tf.train.latest_checkpoint(self.checkpoints) or "").endswith(f"-{epoch}"):
                time.sleep(0.1)
            os._exit(CRASH_EXIT)
        self.seen.append(epoch)


def resume(strategy):
    """Magnitude pruning for 3 epochs, checkpointed at every epoch; resumes from the shared checkpoints."""
    crash_at = os.environ.get("MULTIWORKER_CRASH_AT_EPOCH")
    epochs = _Epochs(None if crash_at is None else int(crash_at), os.environ["MULTIWORKER_CHECKPOINTS"])
    schedule = ts.schedules.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=10, frequency=2)
    with strategy.scope():
        model = _compile(ts.prune_low_magnitude(_model(), schedule))
    ts.distribute.train(model, _dataset(), epochs=3, strategy=strategy, callbacks=[epochs],
                        checkpoint_dir=os.environ["MULTIWORKER_CHECKPOINTS"], verbose=0)
    return {**_variables(model), "epochs_run": np.array(epochs.seen)}


METHODS = {f.__name__: f for f in (
    magnitude, magnitude_global, freezenet, snip, jackpot, csgd, polarize, hessian, resume)}


def _strategy():
    if "TF_CONFIG" not in os.environ:
        return tf.distribute.get_strategy()
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _variables(model):
    """`{path: value}` of every variable of `model` (this process's copy)."""
    return {v.path: np.asarray(v.numpy()) for v in model.variables}


def _arrays(result):
    """A method's result to save: a dict of arrays as it is, a model's variables otherwise."""
    return result if isinstance(result, dict) else _variables(result)


def main(directory, methods):
    strategy = _strategy()
    for name in methods:
        keras.utils.set_random_seed(0)
        result = METHODS[name](strategy)
        np.savez(os.path.join(directory, f"{name}.npz"), **_arrays(result))
        print(f"{name}: done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
