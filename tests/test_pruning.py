"""Magnitude pruning: every supported layer, exact sparsity, optimizers, save/load."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Masked


def _layer_cases():
    """(layer factory, input shape, integer inputs?) for every supported layer."""
    return {
        "Dense": (lambda: keras.layers.Dense(6), (5,)),
        "EinsumDense": (lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=6), (5,)),
        "Conv1D": (lambda: keras.layers.Conv1D(4, 3), (8, 3)),
        "Conv2D": (lambda: keras.layers.Conv2D(4, 3), (6, 6, 3)),
        "Conv3D": (lambda: keras.layers.Conv3D(4, 2), (4, 4, 4, 2)),
        "Conv1DTranspose": (lambda: keras.layers.Conv1DTranspose(4, 3), (8, 3)),
        "Conv2DTranspose": (lambda: keras.layers.Conv2DTranspose(4, 3), (6, 6, 3)),
        "Conv3DTranspose": (lambda: keras.layers.Conv3DTranspose(4, 2), (4, 4, 4, 2)),
        "DepthwiseConv1D": (lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2), (8, 3)),
        "DepthwiseConv2D": (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 3)),
        "SeparableConv1D": (lambda: keras.layers.SeparableConv1D(4, 3, depth_multiplier=2), (8, 3)),
        "SeparableConv2D": (lambda: keras.layers.SeparableConv2D(4, 3, depth_multiplier=2), (6, 6, 3)),
        "Embedding": (lambda: keras.layers.Embedding(20, 6), (7,)),
    }


CASES = _layer_cases()


def _model_with(name):
    make, shape = CASES[name]
    inputs = keras.Input(shape, dtype="int32" if name == "Embedding" else "float32")
    x = make()(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _data(model, n=32):
    shape = (n,) + tuple(model.input_shape[1:])
    if model.inputs[0].dtype == "int32":
        x = np.random.randint(0, 20, shape).astype("int32")
    else:
        x = np.random.rand(*shape).astype("float32")
    return x, np.random.randint(0, 3, n)


def _masked_layers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, Masked)]


def _zeros(tensor):
    return int(np.sum(keras.ops.convert_to_numpy(tensor) == 0))


def _fit(model, x, y, optimizer="adam", epochs=1, batch_size=8):
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_supported_layer_wraps_trains_and_strips(name):
    model = _model_with(name)
    x, y = _data(model)
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, begin_step=0, frequency=2))
    _fit(pruned, x, y)
    layers = _masked_layers(pruned)
    assert len(layers) == 2  # the layer under test and the classifier
    for layer in layers:
        assert int(layer.pruning_step.numpy()) == 4
        for weight in layer.effective_weights().values():
            assert _zeros(weight) == round(0.5 * int(np.prod(weight.shape)))
    plain = ts.strip_pruning(pruned)
    assert not _masked_layers(plain)
    np.testing.assert_array_equal(plain.predict(x, verbose=0), pruned.predict(x, verbose=0))
    # The input model is untouched.
    assert not _masked_layers(model)


def test_sparsity_is_exact_with_ties():
    layer = Masked(keras.layers.Dense(10), pruning_schedule=ts.schedules.ConstantSparsity(0.37, 1))
    layer.build((None, 9))
    layer.layer.kernel.assign(np.ones((9, 10), "float32"))
    layer(np.ones((1, 9), "float32"), training=True)
    assert _zeros(layer.masks[0]) == round(0.37 * 90)


def test_magnitude_order_is_respected():
    layer = Masked(keras.layers.Dense(4), pruning_schedule=ts.schedules.ConstantSparsity(0.75, 1))
    layer.build((None, 4))
    values = np.arange(1, 17, dtype="float32").reshape(4, 4) * np.where(np.arange(16) % 2, 1, -1).reshape(4, 4)
    layer.layer.kernel.assign(values)
    layer(np.ones((1, 4), "float32"), training=True)
    kept = np.abs(values)[layer.masks[0].numpy() == 1]
    np.testing.assert_array_equal(np.sort(kept), [13, 14, 15, 16])


def test_polynomial_schedule_follows_tfmot_semantics():
    schedule = ts.schedules.PolynomialDecay(0.2, 0.8, begin_step=2, end_step=10, power=3, frequency=4)
    layer = Masked(keras.layers.Dense(50), pruning_schedule=schedule)
    layer.build((None, 20))
    x = np.ones((1, 20), "float32")
    seen = []
    for step in range(14):
        layer(x, training=True)
        seen.append(_zeros(layer.masks[0]))
    expected_at = {s: round(float(schedule.sparsity(s)) * 1000) for s in (2, 6, 10)}
    # The k-th training call is step k, as in TFMOT: seen[k - 1] is after step k.
    assert seen[:1] == [0]
    assert seen[1:5] == [expected_at[2]] * 4
    assert seen[5:9] == [expected_at[6]] * 4
    assert seen[9:] == [expected_at[10]] * 5 and expected_at[10] == 800


def test_tfmot_schedule_objects_are_accepted_as_they_are():
    import tensorflow_model_optimization as tfmot  # a dependency; needs tf-keras (the dev extra)
    theirs = tfmot.sparsity.keras.PolynomialDecay(0.1, 0.8, begin_step=0, end_step=100, frequency=10)
    ours = ts.schedules.get(theirs)
    assert isinstance(ours, ts.schedules.PolynomialDecay)
    for step in (0, 5, 10, 50, 100, 150):
        t = tf.constant(step, tf.int64)
        assert bool(theirs(t)[0]) == bool(ours(t)[0])
        np.testing.assert_allclose(float(theirs(t)[1]), float(ours(t)[1]), atol=1e-7)
    model = ts.prune_low_magnitude(ts.models.lenet_300_100((8, 8, 1)), theirs)
    assert all(isinstance(l.pruning_schedule, ts.schedules.PolynomialDecay) for l in _masked_layers(model))


def test_trains_under_mixed_precision_with_the_mask_applied(mixed_precision):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.5, begin_step=1, frequency=1))
    pruned.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 3, 32)
    pruned.fit(x, y, batch_size=8, verbose=0)
    assert pruned(x).dtype == "float16"
    for layer in _masked_layers(pruned):
        mask = layer.masks[0].numpy()
        assert layer.layer.kernel.dtype == "float32"
        assert _zeros(mask) == round(0.5 * mask.size)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])[~mask], 0)
    # The layer computes with the masked kernel in float16.
    first = _masked_layers(pruned)[0]
    expected = np.maximum(x.astype("float16") @ np.where(first.masks[0].numpy(), first.layer.kernel.numpy(), 0).astype("float16")
                          + first.layer.bias.numpy().astype("float16"), 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(first(x)), expected, rtol=1e-2, atol=1e-2)


def test_gradient_passes_straight_through_and_pruned_weights_never_come_back():
    schedule = ts.schedules.PolynomialDecay(0.5, 0.8, begin_step=1, end_step=11, frequency=10)
    layer = Masked(keras.layers.Dense(8), pruning_schedule=schedule)
    layer.build((None, 6))
    plain = keras.layers.Dense(8)
    plain.build((None, 6))
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    optimizer = keras.optimizers.SGD(0.1)

    def step():
        with tf.GradientTape(persistent=True) as tape:
            ours = tf.reduce_sum(layer(x, training=True) ** 2)
            plain.set_weights([keras.ops.convert_to_numpy(w) for w in layer.effective_weights().values()]
                              + [layer.layer.bias.numpy()])
            theirs = tf.reduce_sum(plain(x) ** 2)
        gradient = tape.gradient(ours, layer.layer.kernel)
        np.testing.assert_allclose(gradient, tape.gradient(theirs, plain.kernel), rtol=1e-6)
        optimizer.apply([gradient], [layer.layer.kernel])

    step()  # step 1: half the kernel pruned
    first = layer.masks[0].numpy()
    pruned_values = layer.layer.kernel.numpy()[~first]
    for _ in range(9):
        step()
    assert np.all(layer.layer.kernel.numpy()[~first] != pruned_values)  # the stored entries trained behind the mask
    # Stored pruned entries made the largest: a plain magnitude rule would bring them back at step 11.
    layer.layer.kernel.assign(np.where(first, layer.layer.kernel.numpy(), 100.0))
    step()
    second = layer.masks[0].numpy()
    assert _zeros(second) == round(0.8 * second.size) and not np.any(second & ~first)


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_masked_entries_stay_zero_under_any_optimizer(optimizer):
    model = ts.models.lenet_300_100((8, 8, 1))
    x = np.random.rand(64, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 64)
    # Prune once at the first step, then train many steps with momentum/decay state.
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.8, 1, end_step=1))
    _fit(pruned, x, y, optimizer(), epochs=3)
    for layer in _masked_layers(pruned):
        mask = layer.masks[0].numpy()
        kernel = keras.ops.convert_to_numpy(layer.effective_weights()["kernel"])
        assert np.all(kernel[mask == 0] == 0)
        assert _zeros(mask) == round(0.8 * mask.size)
    plain = ts.strip(pruned)
    for layer in plain.layers:
        if isinstance(layer, keras.layers.Dense):
            assert _zeros(layer.kernel) >= round(0.8 * np.prod(layer.kernel.shape))


@pytest.mark.slow
def test_keras_round_trip_keeps_outputs_and_training_state(tmp_path):
    model = ts.models.lenet_300_100((8, 8, 1))
    schedule = ts.schedules.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=20, frequency=5)
    pruned = ts.prune_low_magnitude(model, schedule, block_size=(1, 1))
    x = np.random.rand(64, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 64)
    _fit(pruned, x, y)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0))
    before, after = _masked_layers(pruned), _masked_layers(loaded)
    assert [l.get_config()["pruning_schedule"] for l in before] == [l.get_config()["pruning_schedule"] for l in after]
    assert [int(l.pruning_step.numpy()) for l in after] == [8, 8, 8]
    _fit(loaded, x, y, epochs=2)  # continues the schedule to its end
    for layer in _masked_layers(loaded):
        assert _zeros(layer.masks[0]) == round(0.9 * layer.masks[0].shape.num_elements())


def test_global_scope_uses_one_threshold_across_layers(tmp_path):
    model = ts.models.lenet_300_100((8, 8, 1))
    # Make one layer clearly more important so a global threshold must differ per layer.
    model.get_layer("fc2").kernel.assign(model.get_layer("fc2").kernel * 10.0)
    pruned = ts.prune_low_magnitude(model, ts.schedules.ConstantSparsity(0.9, 1, end_step=1), scope="global")
    x = np.random.rand(8, 8, 8, 1).astype("float32")
    pruned(x, training=True)
    layers = _masked_layers(pruned)
    total = sum(l.masks[0].shape.num_elements() for l in layers)
    assert sum(_zeros(l.masks[0]) for l in layers) == round(0.9 * total)
    dropped = np.concatenate([np.abs(l.layer.kernel.numpy())[l.masks[0].numpy() == 0] for l in layers])
    for l in layers:  # one threshold, except that a layer keeps at least its largest weight
        kernel, mask = np.abs(l.layer.kernel.numpy()), l.masks[0].numpy()
        kept = kernel[mask == 1]
        assert kept.min() >= dropped.max() or (kept.size == 1 and kept.item() == kernel.max())
    rates = [_zeros(l.masks[0]) / l.masks[0].shape.num_elements() for l in layers]
    assert rates[1] < 0.9 < rates[0]
    # A loaded copy forms its own group and keeps the rule.
    pruned.save(tmp_path / "global.keras")
    loaded = keras.saving.load_model(tmp_path / "global.keras")
    for layer in _masked_layers(loaded):
        layer.masks[0].assign(np.ones(layer.masks[0].shape, "float32"))
        layer.pruning_step.assign(0)
    loaded(x, training=True)
    np.testing.assert_array_equal(
        [l.masks[0].numpy().sum() for l in _masked_layers(loaded)], [l.masks[0].numpy().sum() for l in layers]
    )


def test_m_by_n_sparsity_has_m_zeros_in_every_group():
    layer = Masked(keras.layers.Conv2D(6, 3), pruning_schedule=ts.schedules.ConstantSparsity(0.5, 1), sparsity_m_by_n=(2, 4))
    layer.build((None, 8, 8, 8))
    layer(np.random.rand(1, 8, 8, 8).astype("float32"), training=True)
    mask = layer.masks[0].numpy()  # (3, 3, in=8, out=6): groups of 4 along the input axis
    groups = np.moveaxis(mask, 2, -1).reshape(-1, 4)
    assert np.all(groups.sum(axis=1) == 2)
    kernel = np.abs(np.moveaxis(layer.layer.kernel.numpy(), 2, -1).reshape(-1, 4))
    kept_min = np.where(groups == 1, kernel, np.inf).min(axis=1)
    dropped_max = np.where(groups == 0, kernel, -np.inf).max(axis=1)
    assert np.all(kept_min >= dropped_max)


def test_block_sparsity_prunes_whole_blocks():
    layer = Masked(keras.layers.Dense(8), pruning_schedule=ts.schedules.ConstantSparsity(0.5, 1), block_size=(2, 4))
    layer.build((None, 6))
    layer(np.ones((1, 6), "float32"), training=True)
    blocks = layer.masks[0].numpy().reshape(3, 2, 2, 4).transpose(0, 2, 1, 3).reshape(6, 8)
    assert set(blocks.mean(axis=1).tolist()) <= {0.0, 1.0}
    assert blocks.mean(axis=1).sum() == 3  # round(0.5 * 6) blocks pruned


def _edge(rows, cols, block_size):
    """True on the entries of the partial blocks at the bottom and right edges."""
    edge = np.zeros((rows, cols), bool)
    edge[rows - rows % block_size[0]:, :] = True
    edge[:, cols - cols % block_size[1]:] = True
    return edge


def test_partial_edge_blocks_score_by_their_real_entries():
    edge = _edge(32, 10, (3, 3))  # 50 entries in the partial blocks
    # AVG: edge blocks scoring higher than the rest must all be kept.
    scores = np.where(edge, 2.0, 1.0).astype("float32")
    mask = ts.scoring.block_mask(tf.constant(scores), 0.5, (3, 3), "AVG").numpy()
    assert np.all(mask[edge] == 1)
    assert _zeros(mask) == 162  # 18 full blocks: the count closest to 0.5 * 320
    # MAX over negative scores: edge blocks scoring lower must go first.
    scores = np.where(edge, -5.0, -1.0).astype("float32")
    mask = ts.scoring.block_mask(tf.constant(scores), 50 / 320, (3, 3), "MAX").numpy()
    np.testing.assert_array_equal(mask, np.where(edge, 0.0, 1.0))


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
@pytest.mark.parametrize("block_size", [(3, 3), (4, 3), (1, 4)])
def test_block_sparsity_counts_real_weights_and_follows_block_scores(block_size, pooling):
    rng = np.random.default_rng(0)
    rows, cols = 32, 10
    br, bc = block_size
    grid = (-(-rows // br), -(-cols // bc))
    pool = np.mean if pooling == "AVG" else np.max
    for sparsity in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0]:
        scores = np.abs(rng.normal(size=(rows, cols))).astype("float32")
        mask = ts.scoring.block_mask(tf.constant(scores), sparsity, block_size, pooling).numpy()
        kept, pooled = np.zeros(grid), np.zeros(grid)
        for i in range(grid[0]):
            for j in range(grid[1]):
                block = (slice(i * br, (i + 1) * br), slice(j * bc, (j + 1) * bc))
                assert len(set(mask[block].ravel().tolist())) == 1  # kept or pruned whole
                kept[i, j], pooled[i, j] = mask[block].flat[0], pool(scores[block])
        if 0 < kept.sum() < kept.size:
            assert pooled[kept == 0].max() <= pooled[kept == 1].min()
        assert abs(_zeros(mask) - round(sparsity * mask.size)) <= br * bc / 2


def test_block_sparsity_of_a_classifier_is_the_target_in_weights():
    layer = Masked(keras.layers.Dense(10), pruning_schedule=ts.schedules.ConstantSparsity(0.5, 1), block_size=(3, 3))
    layer.build((None, 32))
    layer(np.ones((1, 32), "float32"), training=True)
    assert abs(_zeros(layer.masks[0]) - 160) <= 4  # within half a 3x3 block of 0.5 * 320


def test_custom_training_loop_needs_no_callback():
    model = ts.prune_low_magnitude(
        ts.models.lenet_300_100((8, 8, 1)), ts.schedules.PolynomialDecay(0.0, 0.75, 0, 30, frequency=10)
    )
    optimizer = keras.optimizers.Adam(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x = np.random.rand(16, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 16)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(31):
        train_step()
    for layer in _masked_layers(model):
        assert int(layer.pruning_step.numpy()) == 31
        assert _zeros(layer.masks[0]) == round(0.75 * layer.masks[0].shape.num_elements())


class SmallNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.blocks = [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
        self.flatten = keras.layers.Flatten()

    def call(self, x, training=None):
        x = self.flatten(self.conv(x))
        for block in self.blocks:
            x = block(x)
        return x


@pytest.mark.slow
def test_subclassed_and_nested_models():
    x = np.random.rand(32, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 32)
    sub = SmallNet()
    sub(x[:1])
    pruned = ts.prune_low_magnitude(sub, ts.schedules.ConstantSparsity(0.6, 0, frequency=1))
    assert isinstance(pruned.conv, Masked) and all(isinstance(b, Masked) for b in pruned.blocks)
    assert len(pruned.trainable_weights) == 6  # no duplicated variables
    _fit(pruned, x, y)
    assert all(_zeros(l.masks[0]) == round(0.6 * l.masks[0].shape.num_elements()) for l in _masked_layers(pruned))

    inner = keras.Sequential([keras.Input((16,)), keras.layers.Dense(12, activation="relu")], name="inner")
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10)(inner(keras.layers.Flatten()(keras.layers.Conv2D(1, 1)(inputs))[:, :16]))
    nested = keras.Model(inputs, outputs)
    pruned_nested = ts.prune_low_magnitude(nested, ts.schedules.ConstantSparsity(0.5, 0))
    assert len(_masked_layers(pruned_nested)) == 3
    _fit(pruned_nested, x, y)
    plain = ts.strip(pruned_nested)
    np.testing.assert_array_equal(plain.predict(x, verbose=0), pruned_nested.predict(x, verbose=0))


def test_single_layer_wrapping_inside_a_model_definition():
    inputs = keras.Input((5,))
    layer = ts.prune_low_magnitude(keras.layers.Dense(8), ts.schedules.ConstantSparsity(0.5, 1))
    model = keras.Model(inputs, layer(inputs))
    assert isinstance(layer, Masked)
    model(np.ones((2, 5), "float32"), training=True)
    assert _zeros(layer.masks[0]) == 20


def test_unsupported_layers_fail_or_are_skipped_with_a_warning():
    inputs = keras.Input((6, 4))
    x = keras.layers.PReLU(name="my_prelu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    with pytest.raises(TypeError, match=r"my_prelu \(PReLU\).*Supported layer types: Dense"):
        ts.prune_low_magnitude(model)
    with pytest.warns(UserWarning, match=r"my_prelu \(PReLU\)"):
        pruned = ts.prune_low_magnitude(model, skip_unsupported=True)
    assert [type(l).__name__ for l in _masked_layers(pruned)] == ["Masked"]
    with pytest.raises(TypeError, match=r"'my_prelu' of type PReLU cannot be pruned"):
        Masked(keras.layers.PReLU(name="my_prelu"))


def test_batch_norm_is_left_dense_silently():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    pruned = ts.prune_low_magnitude(model)
    assert [type(l).__name__ for l in pruned.layers] == ["Masked", "BatchNormalization"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ts.schedules.ConstantSparsity(1.0, 0), r"`target_sparsity` must be a number in \[0, 1\), received: 1.0"),
        (lambda: ts.schedules.ConstantSparsity(-0.1, 0), r"`target_sparsity` must be a number in \[0, 1\)"),
        (lambda: ts.schedules.PolynomialDecay(0.0, 1.5, 0, 10), r"`final_sparsity` must be a number in \[0, 1\)"),
        (lambda: ts.schedules.PolynomialDecay(0.0, 0.5, 10, 5), r"`end_step` must be >= `begin_step` \(10\), received: 5"),
        (lambda: ts.schedules.ConstantSparsity(0.5, 10, end_step=3), r"`end_step` must be -1 \(no end\) or >= `begin_step`"),
        (lambda: ts.schedules.ConstantSparsity(0.5, -1), r"`begin_step` must be >= 0, received: -1"),
        (lambda: ts.schedules.ConstantSparsity(0.5, 0, frequency=0), r"`frequency` must be > 0, received: 0"),
        (lambda: Masked(keras.layers.Dense(2), block_pooling_type="MIN"), r"`block_pooling_type` must be one of"),
        (lambda: Masked(keras.layers.Dense(2), sparsity_m_by_n=(4, 2)), r"`sparsity_m_by_n` must be \(m, n\) with m < n"),
        (lambda: Masked(keras.layers.Dense(2), scope="model"), r"`scope` must be one of \('layer', 'global'\), received: 'model'"),
        (lambda: ts.prune_low_magnitude(keras.layers.Dense(2), scope="global"), r"`scope='global'` needs a whole model"),
        (lambda: ts.prune_low_magnitude(SmallNet()), r"`model` \('small_net.*'\) is not built"),
        (
            lambda: ts.prune_low_magnitude(keras.Sequential([keras.layers.Dense(2)]), scope="global"),
            r"`scope='global'` needs a built model .*'sequential.*' is not built",
        ),
        (
            lambda: ts.prune_low_magnitude(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), input_shape=(2,)),
            r"Keyword arguments \['input_shape'\] are passed on to the wrapper of a single layer.*a model",
        ),
        (lambda: ts.prune_low_magnitude("model"), r"`to_prune` must be a keras.Model or keras.layers.Layer"),
        (lambda: ts.prune_low_magnitude(keras.layers.Dense(2), pruning_schedule=0.5), r"`pruning_schedule` must be a tfsparse or TFMOT"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_mask_shape_and_structure_raise_clear_errors():
    layer = Masked(keras.layers.Dense(3))
    layer.build((None, 4))
    with pytest.raises(ValueError, match=r"0/1 arrays of shape \(4, 3\) .*received shape \(3, 4\)"):
        layer.set_masks([np.ones((3, 4))])
    with pytest.raises(ValueError, match=r"0/1 arrays of shape \(4, 3\) .*with values \[0.5\]"):
        layer.set_masks([np.full((4, 3), 0.5)])
    with pytest.raises(ValueError, match=r"Layer 'masked_dense_\w*' is not built, so it has no masks yet"):
        Masked(keras.layers.Dense(3)).set_masks([np.ones((4, 3))])
    conv = Masked(keras.layers.Conv2D(2, 3), block_size=(2, 2))
    with pytest.raises(ValueError, match=r"`block_size` \(2, 2\) needs rank-2 weights"):
        conv.build((None, 5, 5, 1))
    emb = Masked(keras.layers.Embedding(5, 4), sparsity_m_by_n=(2, 4))
    with pytest.raises(ValueError, match=r"`sparsity_m_by_n` applies to Dense and convolution kernels"):
        emb.build((None, 3))


@pytest.mark.slow
def test_mirrored_strategy_keeps_masks_identical_on_replicas(two_replica_strategy):
    strategy = two_replica_strategy
    x = np.random.rand(64, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 64)
    with strategy.scope():
        model = ts.prune_low_magnitude(
            ts.models.lenet_300_100((8, 8, 1)), ts.schedules.PolynomialDecay(0.0, 0.8, 0, 8, frequency=4)
        )
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    for layer in _masked_layers(model):
        replicas = [v.numpy() for v in layer.masks[0].value.values]  # one copy per device
        assert len(replicas) == 2
        assert all(np.array_equal(replicas[0], r) for r in replicas)
        assert _zeros(replicas[0]) == round(0.8 * replicas[0].size)
        assert int(layer.pruning_step.numpy()) == 12
