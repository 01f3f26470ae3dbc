"""tfsparse.export: SavedModel and TFLite (sparse encoding, quantization) checked with LiteRT."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import tfsparse
from tfsparse.export.tflite import SAMPLE_COUNT
from tfsparse.layers.wrapper import ParametrizedWrapper

SPARSITY = 0.9


@pytest.fixture(scope="module")
def pruned():
    """LeNet-300-100 on 28x28 inputs, pruned to 90% by one training step."""
    keras.utils.set_random_seed(1)
    model = tfsparse.models.lenet_300_100((28, 28, 1))
    model = tfsparse.prune_low_magnitude(model, tfsparse.schedules.ConstantSparsity(SPARSITY, 1))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    model.train_on_batch(rng.uniform(size=(16, 28, 28, 1)).astype("float32"), rng.integers(0, 10, 16))
    for layer in model.layers:
        if isinstance(layer, ParametrizedWrapper):
            kernel = keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])
            assert np.sum(kernel == 0) == round(SPARSITY * kernel.size)
    return model


@pytest.fixture
def inputs():
    return np.random.default_rng(2).uniform(size=(8, 28, 28, 1)).astype("float32")


def _litert(path, x, **kwargs):
    interpreter = Interpreter(model_path=path, **kwargs)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter, interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _keras(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _output_range(model, x):
    out = _keras(model, x)
    return float(out.max() - out.min())


def test_saved_model_reloads_with_identical_outputs(pruned, inputs, tmp_path):
    path = tfsparse.export.saved_model(pruned, str(tmp_path / "savedmodel"))
    assert path == str(tmp_path / "savedmodel")
    reloaded = tf.saved_model.load(path)
    np.testing.assert_array_equal(reloaded.serve(inputs).numpy(), _keras(pruned, inputs))
    # Stripped: only the plain layers' kernels and biases, masked entries zero.
    assert sorted(v.name for v in reloaded.variables) == sorted(
        f"{n}/{w}:0" for n in ("fc1", "fc2", "logits") for w in ("kernel", "bias")
    )
    kernels = [v.numpy() for v in reloaded.variables if "kernel" in v.name]
    assert all(np.sum(k == 0) >= round(SPARSITY * k.size) for k in kernels)


def test_sparse_tflite_is_small_and_exact(pruned, inputs, tmp_path):
    dense = tfsparse.export.tflite(pruned, str(tmp_path / "dense.tflite"), sparse=False, sample_inputs=inputs)
    sparse = tfsparse.export.tflite(pruned, str(tmp_path / "sparse.tflite"), sample_inputs=inputs)
    assert sparse.sparse and not dense.sparse and sparse.quantize is None
    for report in (dense, sparse):
        assert report.bytes == os.path.getsize(report.path)
        assert report.max_abs_diff <= 1e-5
        assert report.litert_default_delegate is True
        assert report.litert_latency_ms > 0
        assert f"{report.bytes:,} bytes" in str(report)
    assert sparse.bytes <= 0.2 * dense.bytes, sparse.bytes / dense.bytes
    # The report's difference is what LiteRT gives on the same inputs.
    _, dense_out = _litert(dense.path, inputs)
    _, sparse_out = _litert(sparse.path, inputs)
    keras_out = _keras(pruned, inputs)
    assert np.max(np.abs(sparse_out.astype(np.float64) - keras_out)) == sparse.max_abs_diff
    np.testing.assert_allclose(sparse_out, dense_out, rtol=0, atol=1e-5)


def test_conv_model_and_random_sample_inputs(tmp_path):
    inputs = keras.Input((8, 8, 1))
    x = tfsparse.prune_low_magnitude(keras.layers.Conv2D(4, 3), tfsparse.schedules.ConstantSparsity(0.5, 0))(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.layers[1].set_masks([np.random.default_rng(0).uniform(size=(3, 3, 1, 4)).round().astype("float32")])
    report = tfsparse.export.tflite(model, str(tmp_path / "conv.tflite"))
    # Without sample inputs the check draws uniform [0, 1) inputs of the model's shape.
    expected = np.random.default_rng(0).uniform(size=(SAMPLE_COUNT, 8, 8, 1))
    _, out = _litert(report.path, expected.astype("float32"))
    assert np.max(np.abs(out.astype(np.float64) - _keras(model, expected.astype("float32")))) == report.max_abs_diff
    assert report.max_abs_diff <= 1e-5


@pytest.mark.slow
def test_dynamic_range_quantization_is_smaller_and_close(pruned, inputs, tmp_path):
    dense = tfsparse.export.tflite(pruned, str(tmp_path / "dense.tflite"), sparse=False, check=False)
    dynamic = tfsparse.export.tflite(
        pruned, str(tmp_path / "dynamic.tflite"), quantize="dynamic", sparse=False, sample_inputs=inputs
    )
    # int8 weights: under a third of the float32 file.
    assert dynamic.bytes < 0.3 * dense.bytes
    assert dynamic.litert_default_delegate is True
    assert dynamic.max_abs_diff <= 0.05 * _output_range(pruned, inputs)
    # Sparse and quantized: smaller still; LiteRT runs it with its built-in kernels.
    with pytest.warns(UserWarning, match="BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
        both = tfsparse.export.tflite(pruned, str(tmp_path / "both.tflite"), quantize="dynamic", sample_inputs=inputs)
    assert both.bytes < dynamic.bytes
    assert both.litert_default_delegate is False
    assert both.max_abs_diff <= 0.05 * _output_range(pruned, inputs)
    assert "built-in kernels" in str(both)


def test_int8_quantization_with_representative_data(pruned, inputs, tmp_path):
    rng = np.random.default_rng(3)
    calibration = tf.data.Dataset.from_tensor_slices(
        (rng.uniform(size=(64, 28, 28, 1)).astype("float32"), rng.integers(0, 10, 64))
    ).batch(16)
    report = tfsparse.export.tflite(
        pruned,
        str(tmp_path / "int8.tflite"),
        quantize="int8",
        representative_data=calibration,
        sparse=False,
        sample_inputs=inputs,
    )
    assert report.quantize == "int8"
    # Within a few int8 steps of the output range.
    assert report.max_abs_diff <= 0.05 * _output_range(pruned, inputs)
    interpreter, _ = _litert(report.path, inputs)
    # Float32 at the edges, int8 inside.
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    int8_shapes = {tuple(t["shape"]) for t in interpreter.get_tensor_details() if t["dtype"] == np.int8}
    float_shapes = {tuple(t["shape"]) for t in interpreter.get_tensor_details() if t["dtype"] == np.float32}
    kernels = {(300, 784), (100, 300), (10, 100)}  # TFLite stores FULLY_CONNECTED weights as (out, in)
    assert kernels <= int8_shapes
    # Hidden activations (batch, 300) and (batch, 100) are int8 only.
    hidden = lambda shapes: {s[-1] for s in shapes - kernels if len(s) == 2}  # noqa: E731
    assert {300, 100} <= hidden(int8_shapes) and not {300, 100} & hidden(float_shapes)
    # Without sample inputs, the representative data supplies them.
    again = tfsparse.export.tflite(
        pruned, str(tmp_path / "int8b.tflite"), quantize="int8", representative_data=calibration, sparse=False
    )
    first = np.concatenate([x for x, _ in calibration])[: SAMPLE_COUNT]
    _, out = _litert(again.path, first)
    assert np.max(np.abs(out.astype(np.float64) - _keras(pruned, first))) == again.max_abs_diff


def test_unchecked_export_and_bad_arguments(pruned, tmp_path):
    report = tfsparse.export.tflite(pruned, str(tmp_path / "sub" / "m.tflite"), check=False)
    assert report.bytes == os.path.getsize(tmp_path / "sub" / "m.tflite")
    assert (report.max_abs_diff, report.litert_latency_ms, report.litert_default_delegate) == (None, None, None)
    path = str(tmp_path / "x.tflite")
    with pytest.raises(ValueError, match=r"Argument `quantize` must be one of \(None, 'dynamic', 'int8'\).*'float16'"):
        tfsparse.export.tflite(pruned, path, quantize="float16")
    with pytest.raises(ValueError, match="Argument `representative_data` is required with `quantize='int8'`"):
        tfsparse.export.tflite(pruned, path, quantize="int8")
    with pytest.raises(ValueError, match="Argument `representative_data` holds no examples"):
        tfsparse.export.tflite(pruned, path, quantize="int8", representative_data=np.zeros((0, 28, 28, 1)))
    with pytest.raises(TypeError, match="Argument `representative_data` must be an array of inputs"):
        tfsparse.export.tflite(pruned, path, quantize="int8", representative_data=[("a", 1)])
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    for export in (lambda m: tfsparse.export.tflite(m, path), lambda m: tfsparse.export.saved_model(m, path)):
        with pytest.raises(ValueError, match="Argument `model`.*is not built"):
            export(unbuilt)
        with pytest.raises(TypeError, match="Argument `model` must be a keras.Model"):
            export(keras.layers.Dense(3))
    with pytest.raises(TypeError, match="Argument `path`"):
        tfsparse.export.tflite(pruned, 3)
    with pytest.raises(TypeError, match=r"Argument `sparse` must be True or False, received: 'no'"):
        tfsparse.export.tflite(pruned, path, sparse="no")
    assert not os.path.exists(path)


def test_inputs_of_the_wrong_shape_are_rejected_by_name(tmp_path):
    model = tfsparse.models.lenet_300_100((8, 8, 1))
    with pytest.raises(ValueError, match=r"`sample_inputs` must hold inputs of shape \(batch, 8, 8, 1\).*received shape \(4, 7, 7, 1\)"):
        tfsparse.export.tflite(model, tmp_path / "m.tflite", sample_inputs=np.zeros((4, 7, 7, 1), "float32"))
    with pytest.raises(ValueError, match=r"`representative_data` must hold inputs of shape"):
        tfsparse.export.tflite(model, tmp_path / "m.tflite", quantize="int8", representative_data=np.zeros((4, 64), "float32"))
