"""tfsparse.summary: exact counts, FLOPs by hand, nested models, extra columns."""

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.layers import Masked


def _random_mask(shape, zeros, rng):
    """A 0/1 mask of `shape` with exactly `zeros` zeros."""
    flat = np.ones(int(np.prod(shape)), "float32")
    flat[rng.permutation(flat.size)[:zeros]] = 0.0
    return flat.reshape(shape)


def _masked_conv_dense():
    """Masked Conv2D(3, 3x3) on 5x5x2 inputs, then Masked Dense(4), with known masks.

    Stored kernels hold no zeros, so every zero comes from a mask; each bias
    has exactly one zero.
    """
    rng = np.random.default_rng(1)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            Masked(keras.layers.Conv2D(3, 3), name="conv"),
            keras.layers.Flatten(),
            Masked(keras.layers.Dense(4), name="fc"),
        ]
    )
    conv, fc = model.layers[0], model.layers[2]
    for layer, zeros in ((conv, 20), (fc, 70)):
        kernel_shape = tuple(layer.layer.kernel.shape)
        units = kernel_shape[-1]
        kernel = rng.uniform(0.5, 1.5, kernel_shape).astype("float32")
        bias = np.arange(units, dtype="float32")  # one zero
        layer.layer.set_weights([kernel, bias])
        layer.set_masks([_random_mask(kernel_shape, zeros, rng)])
    return model


def test_counts_and_flops_by_hand():
    model = _masked_conv_dense()
    result = ts.summary(model, print_fn=None)
    conv_mask = model.layers[0].masks[0].numpy()
    fc_mask = model.layers[2].masks[0].numpy()
    conv_kernel_size = 3 * 3 * 2 * 3  # kh * kw * in * filters
    conv_positions = 3 * 3  # a valid 3x3 convolution of 5x5 gives 3x3 outputs
    fc_kernel_size = (3 * 3 * 3) * 4  # flattened 3x3x3 conv output -> 4 units
    expected = {
        "conv": {
            "parameters": conv_kernel_size + 3,
            "nonzeros": int(conv_mask.sum()) + 2,
            "flops": 2 * conv_positions * conv_kernel_size,
            "effective_flops": 2 * conv_positions * int(conv_mask.sum()),
        },
        "fc": {
            "parameters": fc_kernel_size + 4,
            "nonzeros": int(fc_mask.sum()) + 3,
            "flops": 2 * fc_kernel_size,
            "effective_flops": 2 * int(fc_mask.sum()),
        },
    }
    assert [row["layer"] for row in result.rows] == ["conv", "fc"]
    assert [row["type"] for row in result.rows] == ["Masked(Conv2D)", "Masked(Dense)"]
    for row in result.rows:
        want = expected[row["layer"]]
        for key, value in want.items():
            assert row[key] == value, (row["layer"], key)
        assert row["sparsity"] == pytest.approx(1 - want["nonzeros"] / want["parameters"])
        assert row["bytes"] == 4 * want["parameters"]
        assert row["nonzero_bytes"] == 4 * want["nonzeros"]
    for key in ("parameters", "nonzeros", "flops", "effective_flops", "bytes", "nonzero_bytes"):
        assert result.total[key] == sum(row[key] for row in result.rows)
    assert result.total["sparsity"] == pytest.approx(1 - result.total["nonzeros"] / result.total["parameters"])


def test_table_is_printed_and_names_every_layer():
    printed = []
    result = ts.summary(_masked_conv_dense(), print_fn=printed.append)
    assert printed == [str(result)]
    lines = str(result).splitlines()
    assert len(lines) == 1 + 1 + len(result.rows) + 1 + 1  # header, rule, rows, rule, total
    for line, row in zip(lines[2:], result.rows):
        assert line.startswith(row["layer"])
        assert f"{row['parameters']:,}" in line and f"{row['effective_flops']:,}" in line
    assert lines[-1].startswith("Total") and f"{result.total['parameters']:,}" in lines[-1]
    assert len({len(line) for line in lines[:2]}) == 1  # the rule spans the header


def test_other_layer_flops_by_hand():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.SeparableConv2D(4, 3, depth_multiplier=2, name="sep")(inputs)  # -> 4x4x4
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=3, name="dw")(x)  # -> 2x2x12
    x = keras.layers.Conv2DTranspose(5, 2, strides=2, name="tconv")(x)  # -> 4x4x5
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Reshape((16, 5))(x)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(16, 7), name="einsum")(x)
    model = keras.Model(inputs, x)
    rows = {row["layer"]: row for row in ts.summary(model, print_fn=None).rows}
    sep_positions = 4 * 4
    assert rows["sep"]["flops"] == 2 * sep_positions * (3 * 3 * 2 * 2 + 2 * 2 * 4)
    assert rows["dw"]["flops"] == 2 * (2 * 2) * (3 * 3 * 4 * 3)
    assert rows["tconv"]["flops"] == 2 * (2 * 2) * (2 * 2 * 5 * 12)  # input positions x kernel
    assert rows["bn"]["flops"] == 2 * (4 * 4 * 5)
    assert rows["einsum"]["flops"] == 2 * 16 * (5 * 7)
    for row in rows.values():
        assert row["effective_flops"] == row["flops"]  # dense random kernels


def test_nested_model_matches_stripped_and_count_params():
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="fc"), keras.layers.BatchNormalization(name="bn")], name="inner"
    )
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inner(x)))
    dense = ts.summary(model, print_fn=None)
    weights = [w.numpy() for w in model.weights]
    assert dense.total["parameters"] == model.count_params()
    assert dense.total["nonzeros"] == sum(int(np.count_nonzero(w)) for w in weights)
    assert {"inner/fc", "inner/bn"} <= {row["layer"] for row in dense.rows}

    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.6, 0, frequency=1))
    pruned.compile("sgd", "mse")
    pruned.fit(np.random.rand(16, 4, 4, 1), np.random.rand(16, 3), batch_size=8, verbose=0)
    wrapped = ts.summary(pruned, print_fn=None)
    stripped = ts.summary(ts.strip_pruning(pruned), print_fn=None)
    assert "inner/prune_low_magnitude_fc" in {row["layer"] for row in wrapped.rows}
    assert wrapped.total["parameters"] == model.count_params()  # masks and steps not counted
    for key in ("parameters", "nonzeros", "flops", "effective_flops", "bytes", "nonzero_bytes"):
        assert wrapped.total[key] == stripped.total[key], key
    assert wrapped.total["effective_flops"] < wrapped.total["flops"]


class _Block(keras.layers.Layer):
    """A custom layer with a weight of its own and a masked sublayer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = Masked(keras.layers.Dense(4, name="fc"), name="masked_fc")

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")
        self.fc.build(input_shape)

    def call(self, x):
        return self.fc(x * self.scale)


class _Net(keras.Model):
    def __init__(self):
        super().__init__(name="net")
        self.block = _Block(name="block")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.block(x))


def test_subclassed_model_and_custom_layer():
    model = _Net()
    model(np.ones((1, 3), "float32"))
    rng = np.random.default_rng(2)
    model.block.fc.set_masks([_random_mask((3, 4), 5, rng)])
    rows = {row["layer"]: row for row in ts.summary(model, print_fn=None).rows}
    assert set(rows) == {"block", "block/masked_fc", "head"}
    assert rows["block"]["parameters"] == 3 and rows["block"]["flops"] == 0
    assert rows["block/masked_fc"]["parameters"] == 3 * 4 + 4
    assert rows["block/masked_fc"]["nonzeros"] == 3 * 4 - 5  # zero bias
    assert rows["block/masked_fc"]["effective_flops"] == 2 * (3 * 4 - 5)
    bookkeeping = [*model.block.fc.masks, model.block.fc.pruning_step]
    real = model.count_params() - sum(int(np.prod(v.shape)) for v in bookkeeping)
    assert sum(row["parameters"] for row in rows.values()) == real


class _Kept(Masked):
    """Reports how many kernel entries its mask keeps (a tensor) and its scope."""

    def summary_fields(self):
        return {"kept": keras.ops.sum(self.masks[0]), "scope": self.scope}


class _Distance(Masked):
    """Reports a fixed distance figure."""

    def summary_fields(self):
        return {"distance": 2.5}


def test_extra_columns_from_summary_fields():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            _Kept(keras.layers.Dense(5), name="a"),
            keras.layers.Dense(4, name="plain"),
            _Kept(keras.layers.Dense(3), name="b"),
            _Distance(keras.layers.Dense(2), name="c"),
        ]
    )
    rng = np.random.default_rng(0)
    model.layers[0].set_masks([_random_mask((6, 5), 11, rng)])
    model.layers[2].set_masks([_random_mask((4, 3), 5, rng)])
    result = ts.summary(model, print_fn=None)
    assert list(result.columns)[-3:] == ["kept", "scope", "distance"]
    rows = {row["layer"]: row for row in result.rows}
    assert rows["a"]["kept"] == 6 * 5 - 11 and rows["b"]["kept"] == 4 * 3 - 5
    assert rows["a"]["scope"] == "layer" and rows["c"]["distance"] == 2.5
    assert rows["plain"]["kept"] is None and rows["plain"]["distance"] is None and rows["a"]["distance"] is None
    assert result.total["kept"] == (6 * 5 - 11) + (4 * 3 - 5)
    assert result.total["distance"] == 2.5
    assert result.total["scope"] is None
    lines = str(result).splitlines()
    assert lines[0].split()[-3:] == ["kept", "scope", "distance"]
    assert lines[-1].split()[-2:] == [str((6 * 5 - 11) + (4 * 3 - 5)), "2.5"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="`model`"):
        ts.summary("model")
    with pytest.raises(ValueError, match="not built"):
        ts.summary(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="`print_fn`"):
        ts.summary(_masked_conv_dense(), print_fn="stdout")

    class Clash(Masked):
        def summary_fields(self):
            return {"parameters": 1}

    model = keras.Sequential([keras.Input((3,)), Clash(keras.layers.Dense(2))])
    with pytest.raises(ValueError, match="'parameters'"):
        ts.summary(model, print_fn=None)


def test_reference_columns_stand_next_to_each_layer_matched_by_path():
    inputs = keras.Input((4,))
    wide = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Dense(8, name="hidden")(inputs)))
    narrow = ts.prune_channels(wide, 0.5, scope="layer", print_fn=None)
    inputs = keras.Input((4,))
    extra = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Dense(2, name="other")(inputs)))
    info = ts.summary(narrow, reference=wide, print_fn=None)
    assert [(r["layer"], r["parameters"], r["reference_parameters"]) for r in info.rows] == [
        ("hidden", 20, 40), ("out", 15, 27)]
    assert (info.total["reference_parameters"], info.total["reference_flops"]) == (67, 2 * (4 * 8 + 8 * 3))
    assert "Ref. params" in str(info) and "Ref. FLOPs" in str(info)
    unmatched = ts.summary(extra, reference=wide, print_fn=None)
    assert unmatched.rows[0]["layer"] == "other" and unmatched.rows[0]["reference_parameters"] is None
