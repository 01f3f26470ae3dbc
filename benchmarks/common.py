"""Helpers shared by the benchmarks: architectures for both Keras flavours, timing, output."""

import json
import os
import pathlib
import platform
import statistics
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
# A VGG-style CNN sized for 2 CPU cores: six 3x3 conv + BatchNorm + ReLU, three poolings.
VGG_CONFIG = (16, 16, "M", 32, 32, "M", 64, 64, "M")


def lenet_300_100(K, input_shape=(28, 28, 1), num_classes=10):
    """LeNet-300-100 built with a Keras module `K` (Keras 3 or tf-keras)."""
    inputs = K.Input(input_shape)
    x = K.layers.Flatten()(inputs)
    x = K.layers.Dense(300, activation="relu")(x)
    x = K.layers.Dense(100, activation="relu")(x)
    return K.Model(inputs, K.layers.Dense(num_classes)(x))


def lenet5_caffe(K, input_shape=(28, 28, 1), num_classes=10):
    """LeNet-5-Caffe built with a Keras module `K` (Keras 3 or tf-keras)."""
    inputs = K.Input(input_shape)
    x = K.layers.Conv2D(20, 5, activation="relu")(inputs)
    x = K.layers.MaxPooling2D(2)(x)
    x = K.layers.Conv2D(50, 5, activation="relu")(x)
    x = K.layers.MaxPooling2D(2)(x)
    x = K.layers.Flatten()(x)
    x = K.layers.Dense(500, activation="relu")(x)
    return K.Model(inputs, K.layers.Dense(num_classes)(x))


def small_cnn(K, input_shape=(28, 28, 1), num_classes=10):
    """A small CNN (3 conv + BN blocks, global pooling, classifier)."""
    inputs = K.Input(input_shape)
    x = inputs
    for filters in (32, 64, 128):
        x = K.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = K.layers.BatchNormalization()(x)
        x = K.layers.ReLU()(x)
        x = K.layers.MaxPooling2D(2)(x)
    x = K.layers.GlobalAveragePooling2D()(x)
    return K.Model(inputs, K.layers.Dense(num_classes)(x))


ARCHITECTURES = {"lenet_300_100": lenet_300_100, "lenet5_caffe": lenet5_caffe, "small_cnn": small_cnn}


def tf_keras():
    """Imports tf-keras and TFMOT (the `bench` extra), with a clear message if missing."""
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as error:
        raise SystemExit(f"This benchmark needs the TFMOT baseline: pip install -e '.[bench]' ({error})")
    return tf_keras, tfmot


def timed(fn):
    """Runs `fn()` and returns the wall-clock seconds it took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_timed(fn):
    """Runs `fn()` and returns `(wall seconds, process CPU seconds)`.

    CPU time (all threads) is less disturbed than wall time when other
    processes compete for the cores.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def median(values):
    return statistics.median(values)


def machine():
    """A short description of where a result was measured."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def write_json(name, payload):
    """Writes `payload` to benchmarks/results/<name>.json and returns the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
