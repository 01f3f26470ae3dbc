"""TFLite export (sparse encoding, quantization), checked by running it with LiteRT."""

import dataclasses
import os
import statistics
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfsparse.checks import check_model
from tfsparse.export.saved_model import saved_model
from tfsparse.surgery.strip import strip
from tfsparse.walk import named_layers

QUANTIZE_MODES = (None, "dynamic", "int8")
SAMPLE_COUNT = 8  # inputs compared with the Keras model
CALIBRATION_SAMPLES = 128  # examples of `representative_data` used for int8 calibration
LATENCY_RUNS = 20  # timed batch-1 invocations (after one warm-up)
RECURRENT = (keras.layers.RNN, keras.layers.Bidirectional)  # converted with a static batch size


@dataclasses.dataclass
class TFLiteReport:
    """What `tfsparse.export.tflite` wrote and how the file ran under LiteRT.

    Attributes:
        path: the `.tflite` file written.
        bytes: its size.
        max_abs_diff: largest absolute difference between the LiteRT and
            the Keras outputs on the sample inputs (`None` if not checked).
        litert_latency_ms: median time of one batch-1 LiteRT invocation, in
            milliseconds (`None` if not checked).
        quantize: the quantization mode: `None`, `"dynamic"` or `"int8"`.
        sparse: whether the sparse tensor encoding was requested.
        litert_default_delegate: True if the file ran with LiteRT's default
            delegate (XNNPack on CPU), False if only with LiteRT's built-in
            kernels (`None` if not checked).
    """

    path: str
    bytes: int
    max_abs_diff: float | None
    litert_latency_ms: float | None
    quantize: str | None
    sparse: bool
    litert_default_delegate: bool | None = None

    def __str__(self):
        text = f"{self.path}: {self.bytes:,} bytes (quantize={self.quantize}, sparse={self.sparse})"
        if self.max_abs_diff is None:
            return text + ", not checked"
        kernels = "" if self.litert_default_delegate else " (built-in kernels, no default delegate)"
        return (
            f"{text}, LiteRT vs Keras max |diff| {self.max_abs_diff:.3g}, "
            f"{self.litert_latency_ms:.3f} ms per batch-1 inference{kernels}"
        )


def tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    sparse=True,
    check=True,
    sample_inputs=None,
):
    """Converts a model to a TFLite file and checks it with LiteRT.

    The tfsparse wrappers are stripped first, the plain model is exported as
    a SavedModel (`tfsparse.export.saved_model`) and converted by
    `tf.lite.TFLiteConverter`. With `sparse=True` the converter stores
    sparse weights in its sparse tensor encoding
    (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`); dense weights stay dense (a
    dense model gives the same file either way).

    Quantization:
    - `None`: float32 weights and compute.
    - `"dynamic"`: dynamic-range quantization, int8 weights (about 4x
      smaller), float32 activations.
    - `"int8"`: full integer quantization: int8 weights and activations,
      with activation ranges calibrated on `representative_data`. Inputs and
      outputs stay float32 (the file quantizes and dequantizes at its edges),
      so it takes the same inputs as the Keras model and returns comparable
      outputs.

    With `check=True` the written file is run with LiteRT
    (`ai_edge_litert`) on sample inputs: `sample_inputs` if given, else the
    first examples of `representative_data`, else uniform random values in
    [0, 1) of the model's input shape. The check needs a model with one
    float input and one output. With ai-edge-litert 2.3, files that combine
    the sparse encoding with quantization do not run with LiteRT's default
    delegate (XNNPack cannot prepare their sparse quantized kernels); they
    run with LiteRT's built-in
    kernels (`experimental_op_resolver_type=OpResolverType.
    BUILTIN_WITHOUT_DEFAULT_DELEGATES`), which the check then uses, with a
    warning. Float sparse files run with the default delegate.

    Recurrent layers (SimpleRNN, GRU, LSTM, RNN, Bidirectional) convert to
    TFLite builtin ops only with a static batch size: Keras runs them in a
    `tf.while_loop` over tensor lists, which the converter lowers only when
    their element shapes are fully known (otherwise it asks for select TF
    ops, which LiteRT cannot run without the Flex delegate). A model
    holding one is therefore converted with a batch size of 1, and the
    check runs the sample inputs one example at a time; other models keep
    a dynamic batch size.

    Args:
        model: a built Keras model, possibly holding tfsparse wrappers.
        path: the `.tflite` file to write (parent directories are created).
        quantize: `None`, `"dynamic"` or `"int8"`.
        representative_data: inputs for int8 calibration (required for
            `"int8"`; otherwise only a source of sample inputs): an array of
            inputs with a leading batch axis, or a `tf.data.Dataset` (or any
            iterable) of input batches or `(inputs, labels)` batches, such as
            `tfsparse.data.load(...)`. At most 128 examples are used.
        sparse: use the sparse tensor encoding.
        check: run the file with LiteRT and measure it.
        sample_inputs: array of inputs (with a batch axis) for the check.

    Returns:
        A `TFLiteReport`.

    Raises:
        TypeError: if `model` is not a Keras model, or the data cannot be
            read as arrays of inputs.
        ValueError: for an unbuilt model, an unknown `quantize`, `"int8"`
            without `representative_data`, empty data, or a check that
            cannot run (several inputs or outputs, unknown input shape).

    Example:

    >>> pruned = tfsparse.prune_low_magnitude(model, tfsparse.schedules.ConstantSparsity(0.9, begin_step=1))
    >>> outputs = pruned(x, training=True)  # a training step sets the masks
    >>> report = tfsparse.export.tflite(pruned, "pruned.tflite")
    >>> print(report)
    pruned.tflite: ... bytes (quantize=None, sparse=True), ...
    >>> report = tfsparse.export.tflite(
    ...     pruned, "pruned_int8.tflite", quantize="int8", representative_data=train_ds)
    >>> report.quantize
    'int8'
    """
    check_model(model)
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"Argument `quantize` must be one of {QUANTIZE_MODES}, received: {quantize!r}.")
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "Argument `representative_data` is required with `quantize='int8'`: full integer "
            "quantization calibrates activation ranges on it (e.g. a batched tf.data.Dataset "
            "of training inputs). Use `quantize='dynamic'` to quantize weights only."
        )
    if not isinstance(sparse, bool):
        raise TypeError(f"Argument `sparse` must be True or False, received: {sparse!r}.")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Argument `path` must be a str or os.PathLike, received: {path!r}.")
    representative = None
    if representative_data is not None:
        representative = _input_array(representative_data, CALIBRATION_SAMPLES, "representative_data")
        _check_input_shape(model, representative, "representative_data")

    with tempfile.TemporaryDirectory() as tmp:
        converter = tf.lite.TFLiteConverter.from_saved_model(_saved_model_to_convert(model, os.path.join(tmp, "model")))
        converter.optimizations = ([tf.lite.Optimize.DEFAULT] if quantize else []) + (
            [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
        )
        if quantize == "int8":
            converter.representative_dataset = lambda: ([x[None]] for x in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        content = converter.convert()

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    report = TFLiteReport(path, len(content), None, None, quantize, bool(sparse))
    if check:
        if sample_inputs is not None:
            inputs = _input_array(sample_inputs, None, "sample_inputs")
            _check_input_shape(model, inputs, "sample_inputs")
        elif representative is not None:
            inputs = representative[:SAMPLE_COUNT]
        else:
            inputs = None
        report.max_abs_diff, report.litert_latency_ms, report.litert_default_delegate = _run_litert(
            model, content, inputs
        )
    return report


def _saved_model_to_convert(model, path):
    """Writes the SavedModel to convert: `saved_model(model, path)`, with batch size 1 for recurrent models."""
    plain = strip(model)
    if not any(isinstance(layer, RECURRENT) for _, layer in named_layers(plain)):
        return saved_model(plain, path)
    specs = [keras.InputSpec(shape=(1, *x.shape[1:]), dtype=x.dtype) for x in plain.inputs]
    archive = keras.export.ExportArchive()
    archive.track(plain)
    archive.add_endpoint("serve", plain.__call__, input_signature=specs if len(specs) == 1 else [specs])
    archive.write_out(path, verbose=False)
    return path


def _check_input_shape(model, array, argument):
    """Raises `ValueError` unless `array` is a batch of the model's inputs."""
    expected = tuple(model.input_shape[1:])
    given = tuple(array.shape[1:])
    if len(given) != len(expected) or any(e is not None and e != g for e, g in zip(expected, given)):
        raise ValueError(
            f"Argument `{argument}` must hold inputs of shape (batch, {', '.join(map(str, expected))}) "
            f"for model {model.name!r}, received shape {tuple(array.shape)}."
        )


def _input_array(data, limit, argument):
    """Up to `limit` examples of model inputs from an array or batches, as float32."""
    try:
        if hasattr(data, "shape"):
            array = np.asarray(data, np.float32)
        else:
            batches, count = [], 0
            for batch in data:
                if isinstance(batch, (tuple, list)):
                    batch = batch[0]
                batches.append(np.asarray(batch, np.float32))
                count += len(batches[-1])
                if limit is not None and count >= limit:
                    break
            array = np.concatenate(batches) if batches else np.zeros((0,), np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Argument `{argument}` must be an array of inputs with a batch axis, or a dataset "
            f"or iterable of input batches or (inputs, labels) batches, received: "
            f"{type(data).__name__} ({error})."
        ) from error
    if array.ndim < 1 or len(array) == 0:
        raise ValueError(f"Argument `{argument}` holds no examples, received: {type(data).__name__}.")
    return array if limit is None else array[:limit]


def _run_litert(model, content, inputs):
    """Runs a TFLite flatbuffer with LiteRT.

    Returns `(max |LiteRT - Keras|, median batch-1 ms, default_delegate)`:
    the file runs with LiteRT's default delegates when it can, else with its
    built-in kernels only (with a warning).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        return (*_measure(Interpreter(model_content=content), model, inputs), True)
    except RuntimeError:
        builtin = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        result = _measure(Interpreter(model_content=content, experimental_op_resolver_type=builtin), model, inputs)
    warnings.warn(
        "The TFLite file does not run with LiteRT's default delegate (XNNPack cannot prepare its "
        "sparse quantized kernels); it runs with the built-in kernels: "
        "`Interpreter(..., experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)`. "
        "Export with `sparse=False` for a file that runs with the default delegate.",
        stacklevel=3,
    )
    return (*result, False)


def _measure(interpreter, model, inputs):
    """(max |LiteRT - Keras| on `inputs`, median batch-1 ms) for one interpreter."""
    input_details = interpreter.get_input_details()
    output_details = interpreter.get_output_details()
    if len(input_details) != 1 or len(output_details) != 1:
        raise ValueError(
            f"The LiteRT check needs a model with one input and one output, received a model "
            f"with {len(input_details)} inputs and {len(output_details)} outputs: pass `check=False`."
        )
    index = input_details[0]["index"]
    if inputs is None:
        signature = list(input_details[0]["shape_signature"])
        if input_details[0]["dtype"] != np.float32 or -1 in signature[1:]:
            raise ValueError(
                f"Random sample inputs need a float32 input of fixed shape, the model takes "
                f"{np.dtype(input_details[0]['dtype']).name} of shape {signature}: pass `sample_inputs`."
            )
        shape = (SAMPLE_COUNT, *signature[1:])
        inputs = np.random.default_rng(0).uniform(size=shape).astype(np.float32)

    def run(batch):
        interpreter.resize_tensor_input(index, batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, batch.astype(input_details[0]["dtype"]))  # e.g. token ids
        start = time.perf_counter()
        interpreter.invoke()
        elapsed = time.perf_counter() - start
        return interpreter.get_tensor(output_details[0]["index"]), elapsed

    if input_details[0]["shape_signature"][0] == -1:
        litert_out, _ = run(inputs)
    else:  # a file with a static batch size of 1 (see `tflite`)
        litert_out = np.concatenate([run(inputs[i : i + 1])[0] for i in range(len(inputs))])
    keras_out = keras.ops.convert_to_numpy(model(inputs, training=False))
    if litert_out.shape != keras_out.shape:
        raise ValueError(
            f"LiteRT output shape {litert_out.shape} differs from the Keras output shape {keras_out.shape}."
        )
    max_abs_diff = float(np.max(np.abs(litert_out.astype(np.float64) - keras_out)))
    one = inputs[:1]
    run(one)  # warm-up
    latency = statistics.median(run(one)[1] for _ in range(LATENCY_RUNS))
    return max_abs_diff, latency * 1000.0
