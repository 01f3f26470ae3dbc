"""Polarization gating: gates, loss, `polarize`, `GateMonitor`, `strip`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse as ts
from tfsparse.layers import Gated
from tfsparse.layers.gate import gate_sets
from tfsparse.optimizers import Polarization, polarization

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def small_model():
    """BatchNormalization after producers, a concatenation, a depthwise layer and Flatten into Dense."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(h))
    a = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(h)
    b = keras.layers.Conv2D(16, 1, strides=2, name="conv3")(h)
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn2")(h))
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name="small")


def _leader(model):
    ((leader, _),) = gate_sets(model).values()
    return leader


def _data(n=64, shape=(8, 8, 1)):
    rng = np.random.default_rng(0)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n)


def _resnet():
    return ts.models.resnet20(input_shape=(8, 8, 1), width=0.25)


def _close_at_random(model, fraction=0.4, seed=0):
    """Sets the leader's logits so that about `fraction` of the gates are closed (keeping one per group)."""
    leader = _leader(model)
    rng = np.random.default_rng(seed)
    logits = np.where(rng.random(leader.num_gates) < fraction, -1.0, 1.0).astype("float32")
    start = 0
    for channels in leader.bank["channels"]:
        logits[start] = 1.0
        start += len(channels)
    leader.gate_logits.assign(logits / leader.bank["logit_scale"])
    return leader


# The loss.
def test_polarization_on_hand_computed_values():
    assert float(polarization(np.array([0.0, 1.0, 1.0, 0.0], "float32"), t=1.0)) == pytest.approx(0.0)
    # mean|p| = 0.4, mean|p - 0.4| = 0.2
    assert float(polarization(np.array([0.2, 0.6], "float32"), t=1.0)) == pytest.approx(0.2)
    assert float(polarization(np.array([0.2, 0.6], "float32"), t=0.5)) == pytest.approx(0.0, abs=1e-7)


def test_regularizer_terms_and_schedule():
    regularizer = Polarization(0.25, polarization_weight=2.0, sparsity_weight=3.0, t=1.0, warmup_steps=10,
                               ramp_steps=10, freeze_step=30)
    logits = np.array([2.0, -1.0, 0.5, 1.0], "float32")
    p = 1 / (1 + np.exp(-logits))
    expected = 2.0 * (np.mean(p) - np.mean(np.abs(p - p.mean()))) + 3.0 * (0.75 - 0.75) ** 2
    for step, scale in ((5, 0.0), (10, 0.0), (15, 0.5), (25, 1.0), (29, 1.0), (30, 0.0)):
        assert float(regularizer(logits, step)) == pytest.approx(scale * expected, rel=1e-5)
    all_open = np.ones(4, "float32") * 3.0
    p = 1 / (1 + np.exp(-3.0))
    assert float(regularizer(all_open, 25)) == pytest.approx(2.0 * p + 3.0 * 0.25**2, rel=1e-5)
    batch = np.array([[0.2, 0.9], [0.6, 0.9]], "float32")  # variances 0.04 and 0
    assert float(regularizer.consensus(batch, 25)) == pytest.approx(0.02)
    assert Polarization.from_config(regularizer.get_config()).get_config() == regularizer.get_config()


@pytest.mark.parametrize("kwargs", [dict(sparsity=1.0), dict(sparsity=0.5, t=-1.0),
                                    dict(sparsity=0.5, warmup_steps=5, freeze_step=5)])
def test_regularizer_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="Argument"):
        Polarization(**kwargs)


def test_straight_through_gradient():
    gated = ts.polarize(small_model(), sparsity=0.5, steps=10)
    leader = _close_at_random(gated)
    weights = tf.random.stateless_normal((leader.num_gates,), seed=[1, 2])
    with tf.GradientTape() as tape:
        gates = leader.open_gates(training=True)
        value = tf.reduce_sum(weights * gates)
    np.testing.assert_array_equal(gates.numpy(), (leader.logits().numpy() > 0).astype("float32"))
    p = leader.probabilities().numpy()
    expected = weights.numpy() * p * (1 - p) * leader.bank["logit_scale"]
    np.testing.assert_allclose(tape.gradient(value, leader.gate_logits.value).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("make, blocks", [(small_model, 0.0), (_resnet, 0.3)])
def test_optimizer_transform_matches_the_layer_loss(make, blocks):
    x, y = _data(16)
    model = make()
    gradients = []
    for add_loss in (True, False):
        gated = ts.polarize(model, sparsity=0.5, steps=10, blocks=blocks, warmup=0.0, ramp=0.0, add_loss=add_loss)
        with tf.GradientTape() as tape:
            loss = LOSS(y, gated(x, training=True)) + sum(gated.losses)
        variables = gated.trainable_variables
        grads = tape.gradient(loss, variables)
        if not add_loss:
            grads = ts.optimizers.polarization_gradients(gated, grads, variables)
        gradients.append([g.numpy() for g in grads])
    assert len(gradients[0]) == len(gradients[1])
    for a, b in zip(*gradients):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    if blocks:  # the regularizer reaches the block logits too
        assert np.any(gradients[1][[v.path for v in gated.trainable_variables].index(
            _leader(gated).block_logits.path)])


# Gates and strip.
def test_gates_are_shared_by_every_reader_of_a_group():
    gated = ts.polarize(_resnet(), sparsity=0.5, steps=10)
    leader = _close_at_random(gated)
    plain = ts.surgery.unwrap_layers(gated)
    groups = {g.producers: g for g in ts.surgery.dependency_groups(plain)}
    closed = leader.closed_channels()
    assert sum(map(len, closed.values())) > 0
    assert any(len(g.producers) > 3 for g in groups.values())  # a residual stream
    for producers, channels in zip(leader.bank["groups"], leader.bank["channels"]):
        group = groups[tuple(producers)]
        for c in channels:
            parts = group.slices_of(c, roles=("consumer",))
            assert parts
            for layer, weight, axis, indices in parts:
                kernel = next(w for w in plain.get_layer(layer).weights if w.name == weight).numpy()
                zero = not np.any(np.take(kernel, indices, axis=axis))
                assert zero == (c in closed[tuple(producers)]), (layer, c)


@pytest.mark.parametrize("make", [small_model, pytest.param(_resnet, marks=pytest.mark.slow)])
def test_strip_is_exact_and_only_narrower(make):
    gated = ts.polarize(make(), sparsity=0.5, steps=10)
    leader = _close_at_random(gated)
    closed = sum(map(len, leader.closed_channels().values()))
    x, _ = _data(32)
    stripped = ts.strip(gated)
    np.testing.assert_allclose(stripped(x).numpy(), gated(x).numpy(), atol=1e-5)
    original = ts.strip(ts.polarize(make(), sparsity=0.5, steps=10))  # all gates open
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in original.layers]
    groups = [g for g in ts.surgery.dependency_groups(original) if g.prunable]
    widths = {name: original.get_layer(name).output.shape[-1] for g in groups for name in g.producers}
    assert sum(original.get_layer(n).output.shape[-1] - stripped.get_layer(n).output.shape[-1]
               for g in groups for n in g.producers[:1]) == closed
    assert all(stripped.get_layer(n).output.shape[-1] <= w for n, w in widths.items())
    assert not ts.walk.wrappers(stripped)


def test_projection_closes_the_exact_count_and_keeps_a_channel_per_group():
    gated = ts.polarize(small_model(), sparsity=0.85, steps=4, warmup=0.0, ramp=0.0, freeze=0.5)
    leader = _leader(gated)
    leader.gate_logits.assign(np.linspace(-1, 1, leader.num_gates).astype("float32"))
    x, _ = _data(8)
    for _ in range(2):
        gated(x, training=True)
    assert int(leader.step.numpy()) == 2 and bool(leader.frozen())
    assert int(np.sum(leader.decisions.numpy() == 0)) == round(0.85 * leader.num_gates)
    assert all(kept for kept in _open_per_group(leader))
    np.testing.assert_allclose(ts.strip(gated)(x).numpy(), gated(x).numpy(), atol=1e-5)


def test_block_gates_close_the_exact_count_and_strip_removes_those_blocks(tmp_path):
    model = _resnet()
    blocks = ts.surgery.residual_blocks(model)
    gated = ts.polarize(model, sparsity=0.3, steps=4, blocks=0.3, warmup=0.0, ramp=0.0, freeze=0.5)
    leader = _leader(gated)
    assert leader.bank["blocks"] == list(blocks)
    # Lowest logits on the last two blocks: they are the ones to close.
    logits = np.linspace(1.0, -1.0, len(blocks)).astype("float32")
    leader.block_logits.assign(logits / leader.bank["logit_scale"])
    x, _ = _data(8)
    for _ in range(2):
        gated(x, training=True)
    closed = leader.closed_blocks()
    assert closed == list(blocks)[-round(0.3 * len(blocks)):]
    assert ts.callbacks.gate_statistics(gated)["blocks_open"] == pytest.approx(1 - len(closed) / len(blocks))
    stripped = ts.strip(gated)
    np.testing.assert_allclose(stripped(x).numpy(), gated(x).numpy(), atol=1e-5)
    kept = {layer.name for layer in stripped.layers}
    for name in blocks:
        branch = name.replace("_add", "_conv1")
        assert (name in kept, branch in kept) == ((name not in closed,) * 2), name
    assert not any(isinstance(layer, ts.layers.BlockGate) for layer in stripped.layers)
    gated.save(tmp_path / "blocks.keras")
    loaded = keras.saving.load_model(tmp_path / "blocks.keras")
    assert _leader(loaded).closed_blocks() == closed
    np.testing.assert_array_equal(loaded(x).numpy(), gated(x).numpy())


def test_residual_blocks_are_the_adds_with_an_identity_shortcut():
    blocks = ts.surgery.residual_blocks(_resnet())
    # ResNet-20: 9 blocks, of which the first of stages 2 and 3 project their shortcut.
    assert sorted(blocks) == sorted(f"stage{s}_block{b}_add" for s in (1, 2, 3) for b in (1, 2, 3)
                                    if (s, b) not in ((2, 1), (3, 1)))
    assert set(blocks.values()) == {0}
    assert ts.surgery.residual_blocks(small_model()) == {}


def _open_per_group(leader):
    opened, start = [], 0
    gates = leader.open_gates().numpy()
    for channels in leader.bank["channels"]:
        opened.append(int(gates[start:start + len(channels)].sum()))
        start += len(channels)
    return opened


def test_polarize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sparsity"):
        ts.polarize(small_model(), sparsity=1.0, steps=10)
    with pytest.raises(ValueError, match="steps"):
        ts.polarize(small_model(), sparsity=0.5)
    with pytest.raises(ValueError, match="freeze"):
        ts.polarize(small_model(), sparsity=0.5, steps=10, warmup=0.5, ramp=0.2, freeze=0.6)
    with pytest.raises(ValueError, match="wrappers"):
        ts.polarize(ts.polarize(small_model(), steps=10), steps=10)
    with pytest.raises(ValueError, match="`blocks`.*no residual block"):
        ts.polarize(small_model(), sparsity=0.5, steps=10, blocks=0.5)
    with pytest.raises(ValueError, match="blocks"):
        ts.polarize(_resnet(), sparsity=0.5, steps=10, blocks=1.0)
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no prunable channel group"):
        ts.polarize(keras.Model(inputs, keras.layers.Dense(2)(inputs)), steps=10)


def test_gate_statistics_need_gates():
    with pytest.raises(ValueError, match="no channel gates"):
        ts.callbacks.gate_statistics(small_model())
    statistics = ts.callbacks.gate_statistics(ts.polarize(small_model(), sparsity=0.5, steps=10))
    assert statistics == {"gates_open": 1.0, "gates_polarized": 0.0, "gates_consensus": 1.0}


# Training.
@pytest.mark.slow
def test_save_load_and_resume(tmp_path):
    x, y = _data(64)
    gated = ts.polarize(small_model(), sparsity=0.5, steps=16, warmup=0.0, ramp=0.25, freeze=0.5)
    gated.compile(keras.optimizers.Adam(0.01), LOSS)
    gated.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "gated.keras"
    gated.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), gated(x).numpy())
    assert {v.path: v.numpy().tolist() for v in loaded.variables} == {v.path: v.numpy().tolist()
                                                                      for v in gated.variables}
    for model in (gated, loaded):
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert int(_leader(loaded).step.numpy()) == 12
    for a, b in zip(gated.variables, loaded.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    np.testing.assert_allclose(ts.strip(loaded)(x).numpy(), gated(x).numpy(), atol=1e-5)


@pytest.mark.slow
def test_mirrored_strategy_gives_identical_gates_on_both_replicas(two_replica_strategy):
    x, y = _data(64)
    with two_replica_strategy.scope():
        gated = ts.polarize(small_model(), sparsity=0.5, steps=8, warmup=0.0, ramp=0.0, freeze=0.5)
        gated.compile(keras.optimizers.Adam(0.01), LOSS)
    gated.fit(x, y, batch_size=16, epochs=2, verbose=0)
    leader = _leader(gated)
    for variable in (leader.gate_logits, leader.decisions, leader.step):
        copies = [v.numpy() for v in variable.value.values]
        assert len(copies) == 2 and np.array_equal(copies[0], copies[1]), variable.path
    assert int(np.sum(leader.decisions.numpy() == 0)) == round(0.5 * leader.num_gates)


@pytest.mark.slow
def test_dynamic_gates_train_are_monitored_and_strip_exactly(tmp_path):
    x, y = _data(64)
    gated = ts.polarize(small_model(), sparsity=0.5, steps=8, warmup=0.0, ramp=0.0, freeze=0.75, dynamic=True)
    gated.compile(keras.optimizers.Adam(0.05), LOSS)
    history = gated.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[ts.callbacks.GateMonitor(tmp_path)])
    scales = [layer.dynamic_scale.numpy() for layer in gated.layers if isinstance(layer, Gated)]
    assert any(np.any(s != 0) for s in scales)  # the input-dependent term trains
    assert history.history["gates_open"][-1] == pytest.approx(0.5, abs=1e-6)  # fixed at step 6
    assert history.history["gates_consensus"][-1] == 1.0  # decisions fixed: the same for every input
    assert 0.0 <= history.history["gates_consensus"][0] <= 1.0
    assert tf.io.gfile.glob(str(tmp_path / "events.out.tfevents.*"))
    layer = next(layer for layer in gated.layers if isinstance(layer, Gated) and layer.dynamic)
    gated(x, training=True)
    assert len(gated.losses) >= 2 and all(float(loss) >= 0.0 for loss in gated.losses)
    np.testing.assert_allclose(ts.strip(gated)(x).numpy(), gated(x).numpy(), atol=1e-5)
    assert layer.agreement.numpy() == 1.0


def test_gate_consensus_over_a_dataset():
    x, _ = _data(64)
    x -= 0.5  # centred: no channel is dead (a channel constant over a batch would agree whatever its gate)
    gated = ts.polarize(small_model(), sparsity=0.5, steps=10, dynamic=True)
    batches = [x[:32], (x[32:], np.zeros(32))]
    assert ts.callbacks.gate_consensus(gated, batches) == 1.0  # no input-dependent term yet
    leader = _leader(gated)
    leader.gate_logits.assign(np.full(leader.num_gates, 1e-4, "float32"))
    dynamic = [layer for layer in gated.layers if isinstance(layer, Gated)]
    for layer in dynamic:  # every gate sits on its threshold and follows its standardized input
        layer.dynamic_scale.assign(np.full(layer.dynamic_scale.shape, 10.0, "float32"))
    assert ts.callbacks.gate_consensus(gated, batches) == 0.0
    gated(x[:32], training=True)  # the training call's per-layer agreement, on one batch, says the same
    assert all(float(layer.agreement.numpy()) == 0.0 for layer in dynamic if any(
        i != -1 for i in layer.inputs_index))
    with pytest.raises(ValueError, match="no input-dependent gates"):
        ts.callbacks.gate_consensus(ts.polarize(small_model(), sparsity=0.5, steps=10), batches)
    with pytest.raises(ValueError, match="no batch"):
        ts.callbacks.gate_consensus(gated, [])


@pytest.mark.slow
def test_training_on_digits_closes_the_requested_fraction_and_polarizes():
    train = ts.data.load("digits", "train", batch_size=32)
    test = ts.data.load("digits", "test", batch_size=256)
    epochs = 8
    steps = epochs * len(list(train))
    gated = ts.polarize(small_model(), sparsity=0.5, steps=steps)
    gated.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    history = gated.fit(train, epochs=epochs, verbose=0, callbacks=[ts.callbacks.GateMonitor()])
    leader = _leader(gated)
    assert int(leader.step.numpy()) == steps
    assert abs((1 - history.history["gates_open"][-1]) - 0.5) <= 0.02
    assert history.history["gates_polarized"][-1] >= 0.99
    stripped = ts.strip(gated)
    stripped.compile(loss=LOSS, metrics=["accuracy"])
    assert stripped.evaluate(test, verbose=0)[1] == gated.evaluate(test, verbose=0)[1] > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("build", [
    lambda: keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35),
    lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10),
], ids=["MobileNetV2", "ResNet50"])
def test_keras_applications_train_and_strip_exactly_with_block_gates(build):
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 8)
    gated = ts.polarize(build(), sparsity=0.3, steps=2, blocks=0.3, warmup=0.0, ramp=0.0, freeze=0.5)
    gated.compile(keras.optimizers.SGD(0.01), LOSS)
    gated.fit(x, y, batch_size=4, epochs=1, verbose=0)
    leader = _leader(gated)
    assert len(leader.closed_blocks()) == round(0.3 * len(leader.bank["blocks"])) > 0
    stripped = ts.strip(gated)
    np.testing.assert_allclose(stripped(x).numpy(), gated(x).numpy(), atol=1e-5)
    assert stripped.count_params() < gated.count_params()
