"""`tfsparse.summary`: parameters, non-zeros, FLOPs and bytes, per layer.

What is counted:

- **Parameters** are a layer's own weights (for a tfsparse wrapper, the
  wrapped layer's weights: kernel, bias, ...; never masks, scores, step
  counters or other wrapper state). Normalization statistics count, as in
  `keras.Model.count_params`.
- **Non-zeros** are counted on the *effective* weights: for a wrapper,
  `wrapper.effective_weights()` replaces each prunable weight (so a masked
  entry counts as zero whatever the stored kernel holds). Every weight
  counts, so a freshly initialized (all-zero) bias shows as sparsity.
- **FLOPs** are 2 x multiply-adds for one example. A kernel layer does
  `positions x kernel size` multiply-adds per kernel, where positions are
  the output's spatial positions (Dense: all axes but batch and units;
  Conv, DepthwiseConv, SeparableConv: the output's spatial axes; both kernels
  of SeparableConv; ConvTranspose: the *input's* spatial positions, each of
  which meets the whole kernel; EinsumDense: the input axes, batch excluded,
  whose subscripts are not in the kernel). BatchNormalization does one
  multiply-add per output element (inference form). Embedding lookups and
  every other layer (activations, pooling, biases; recurrent layers and
  MultiHeadAttention, which have no FLOP rule yet) count as zero. A
  prunable layer that holds sublayers (an LSTM and its cell) is one row,
  with the weights of its sublayers. Axes of
  unknown size (`None`) count as 1. These are the rules registered in
  `tfsparse.registry`; a custom layer brings its own with
  `tfsparse.register_layer(..., flops=...)`.
- **Effective FLOPs** scale each kernel's multiply-adds by the fraction of
  its effective entries that are non-zero, i.e. what a sparse kernel needs.
- **Bytes** are the dense storage of the weights in their dtype; non-zero
  bytes are the values of the non-zeros only (no index overhead).
"""

import numbers

import keras
import numpy as np

from tfsparse import checks
from tfsparse.registry.flops import layer_flops
from tfsparse.walk import is_wrapper, named_layers

COLUMNS = {
    "layer": "Layer",
    "type": "Type",
    "parameters": "Params",
    "nonzeros": "Non-zeros",
    "sparsity": "Sparsity",
    "flops": "FLOPs",
    "effective_flops": "Eff. FLOPs",
    "bytes": "Bytes",
    "nonzero_bytes": "Non-zero bytes",
}
# Side-by-side columns of `summary(model, reference=...)`: {column: (column of the reference, header)}.
REFERENCE_COLUMNS = {"reference_parameters": ("parameters", "Ref. params"), "reference_flops": ("flops", "Ref. FLOPs")}
_SUMMED = ("parameters", "nonzeros", "flops", "effective_flops", "bytes", "nonzero_bytes")


class Summary:
    """The figures of `tfsparse.summary`: one row per layer with weights.

    Attributes:
        rows: list of dicts, one per layer, keyed by `columns`.
        total: dict with the same keys: sums over the rows, the sparsity of
            the whole model, and sums of numeric extra columns (`None` for
            the others).
        columns: `{key: header}` in table order: the base columns, then the
            extra columns contributed by wrappers' `summary_fields()`.

    `str(summary)` is the table.
    """

    def __init__(self, rows, total, columns):
        self.rows = rows
        self.total = total
        self.columns = columns

    def __str__(self):
        cells = [list(self.columns.values())]
        cells += [[_format(key, row[key]) for key in self.columns] for row in self.rows + [self.total]]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.columns))]

        def line(values):
            # Layer and type left-aligned, figures right-aligned.
            return "  ".join(
                value.ljust(width) if i < 2 else value.rjust(width)
                for i, (value, width) in enumerate(zip(values, widths))
            ).rstrip()

        rule = "-" * len(line(["-" * w for w in widths]))
        body = [line(values) for values in cells[1:-1]]
        return "\n".join([line(cells[0]), rule, *body, rule, line(cells[-1])])

    def __repr__(self):
        return f"<Summary of {len(self.rows)} layers: {self.total['parameters']:,} parameters>"


def summary(model, print_fn=print, reference=None):
    """Counts parameters, non-zeros, FLOPs and bytes of a model, per layer.

    Nested models (and layers holding sublayers) are walked; tfsparse
    wrappers are reported as one row each, as `Wrapper(Layer)`, with the
    figures of their effective weights. Extra per-layer figures that wrappers
    return from `summary_fields()` become extra columns (blank for other
    layers), summed in the total when numeric; ratios that wrappers declare
    in `summary_ratios()` (FreezeNet's compression factor) follow, computed
    from each row and from the total. See the module docstring for exactly
    what is counted.

    With a `reference` model (the model before `tfsparse.prune_channels`,
    say), its parameters and FLOPs stand next to `model`'s, layer by layer
    (matched by layer path; blank where the reference has no such layer),
    and its totals in the total row.

    Args:
        model: a built Keras model (or a single built layer).
        print_fn: called with the table as one string; `None` prints nothing.
        reference: a built Keras model to compare with, or `None`.

    Returns:
        A `Summary` with `.rows` (list of dicts), `.total` (dict) and the
        table as `str()`.

    Raises:
        TypeError: if `model` is not a Keras layer or `print_fn` is not
            callable.
        ValueError: if `model` is not built, or a wrapper returns a summary
            field named like a base column.

    Example:

    >>> pruned = tfsparse.prune_low_magnitude(model, tfsparse.schedules.ConstantSparsity(0.9, begin_step=1))
    >>> outputs = pruned(x, training=True)  # a training step sets the masks
    >>> info = tfsparse.summary(pruned, print_fn=None)
    >>> [row["layer"] for row in info.rows]
    ['prune_low_magnitude_conv1', 'prune_low_magnitude_conv2', 'prune_low_magnitude_conv3', 'prune_low_magnitude_logits']
    >>> round(info.total["effective_flops"] / info.total["flops"], 3)
    0.1

    Side by side with the model a structured method started from:

    >>> narrow = tfsparse.prune_channels(model, 0.5, scope="layer", print_fn=None)
    >>> total = tfsparse.summary(narrow, reference=model, print_fn=None).total
    >>> total["parameters"], total["reference_parameters"]
    (1562, 5674)
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"Argument `model` must be a keras.Model or keras.layers.Layer, "
            f"received: {model!r} (of type {type(model).__name__})."
        )
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"Argument `print_fn` must be callable or None, received: {print_fn!r}.")
    checks.check_built(model)
    rows, extras, ratios = [], {}, {}
    for path, layer in named_layers(model):
        row = _row(path, layer)
        if row is None:
            continue
        fields = layer.summary_fields() if is_wrapper(layer) else {}
        if is_wrapper(layer):
            ratios.update(layer.summary_ratios())
        for key, value in fields.items():
            if key in COLUMNS:
                raise ValueError(
                    f"Layer {layer.name!r} returns the summary field {key!r}, which is a "
                    f"base column ({', '.join(COLUMNS)}); give it another name."
                )
            extras.setdefault(key, key)
            row[key] = _plain(value)
        rows.append(row)
    columns = {**COLUMNS, **extras}
    for row in rows:
        for key in extras:
            row.setdefault(key, None)
    total = _total(rows, extras)
    for key, ratio in ratios.items():
        columns[key] = key
        for row in rows + [total]:
            row[key] = ratio(row)
    if reference is not None:
        _add_reference(rows, total, columns, summary(reference, print_fn=None))
    result = Summary(rows, total, columns)
    if print_fn is not None:
        print_fn(str(result))
    return result


def _add_reference(rows, total, columns, before):
    """Adds the `REFERENCE_COLUMNS` of the `Summary` `before` to the rows, the total and the columns."""
    by_path = {row["layer"]: row for row in before.rows}
    for key, (source, header) in REFERENCE_COLUMNS.items():
        columns[key] = header
        for row in rows:
            row[key] = by_path.get(row["layer"], {}).get(source)
        total[key] = before.total[source]


def _row(path, layer):
    """Figures of one layer, or None if it holds no weights of its own."""
    wrapped = is_wrapper(layer)
    inner = layer.layer if wrapped else layer
    weights = inner.weights if wrapped else _own_weights(layer)
    if not weights:  # no weights, or an unbuilt layer
        return None
    effective = {}
    if wrapped:
        effective = dict(zip(map(id, layer.prunable_weights), layer.effective_weights().values()))
    kind = f"{type(layer).__name__}({type(inner).__name__})" if wrapped else type(inner).__name__
    arrays = [_numpy(effective.get(id(w), w)) for w in weights]
    parameters = sum(a.size for a in arrays)
    nonzeros = sum(int(np.count_nonzero(a)) for a in arrays)
    flops, effective_flops = layer_flops(inner, {w.name: a for w, a in zip(weights, arrays)})
    return {
        "layer": path,
        "type": kind,
        "parameters": parameters,
        "nonzeros": nonzeros,
        "sparsity": _sparsity(nonzeros, parameters),
        "flops": flops,
        "effective_flops": effective_flops,
        "bytes": sum(a.nbytes for a in arrays),
        "nonzero_bytes": sum(int(np.count_nonzero(a)) * a.itemsize for a in arrays),
    }


def _own_weights(layer):
    """The weights a layer creates itself, not those of its sublayers."""
    inner = {id(w) for _, sub in list(named_layers(layer))[1:] for w in sub.weights}
    return [w for w in layer.weights if id(w) not in inner]


def _numpy(value):
    # A variable's own `numpy()`: `convert_to_numpy` on a variable makes
    # NumPy 2 warn about the backend's `__array__`.
    if isinstance(value, keras.Variable):
        return value.numpy()
    return np.asarray(keras.ops.convert_to_numpy(value))


def _sparsity(nonzeros, parameters):
    return 1.0 - nonzeros / parameters if parameters else 0.0


def _plain(value):
    """A Python number (or the value as it is) for a summary field."""
    if hasattr(value, "shape"):
        return _numpy(value).item()
    return value


def _is_number(value):
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _total(rows, extras):
    total = {"layer": "Total", "type": ""}
    total.update({key: sum(row[key] for row in rows) for key in _SUMMED})
    total["sparsity"] = _sparsity(total["nonzeros"], total["parameters"])
    for key in extras:
        values = [row[key] for row in rows if _is_number(row[key])]
        total[key] = sum(values) if values else None
    return total


def _format(key, value):
    if value is None:
        return ""
    if key == "sparsity":
        return f"{value:.2%}"
    if isinstance(value, bool) or not _is_number(value):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    return f"{value:,.4g}"
