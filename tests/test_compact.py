"""Compact checkpoints: bit-exact round trips, compact positions, damaged files rejected."""

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import keras
import numpy as np
import pytest

import tfsparse as ts
from tfsparse.export import CompactFileError, compact
from tfsparse.layers import Frozen, Masked

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mixed_model():
    """Frozen layers (one nested), BatchNormalization, a Masked and a plain layer."""
    inner = keras.Sequential(
        [keras.Input((32,)), Frozen(keras.layers.Dense(16, activation="relu", name="inner_dense"), seed=9)],
        name="block",
    )
    inputs = keras.Input((6, 6, 2))
    x = Frozen(keras.layers.Conv2D(8, 3, name="conv"), seed=9)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(2, 1, name="plain")(x)
    x = keras.layers.Flatten()(x)
    x = inner(x)
    x = Masked(keras.layers.Dense(8, name="masked"))(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    for layer in _wrappers(model):
        layer.set_masks([np.random.rand(*w.shape) < 0.2 for w in layer.prunable_weights])
    return model


def _wrappers(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _wrappers(layer)
        elif isinstance(layer, (Frozen, Masked)):
            found.append(layer)
    return found


def _trained_model():
    model = _mixed_model()
    x, y = _data()
    model.compile(keras.optimizers.AdamW(0.05, weight_decay=0.3), LOSS)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return model


def _data(n=32):
    return np.random.rand(n, 6, 6, 2).astype("float32"), np.random.randint(0, 3, n)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = _trained_model()
    path = str(tmp_path_factory.mktemp("compact") / "model.tfsparse")
    ts.export.save_compact(model, path)
    return model, path


@pytest.mark.slow
def test_round_trip_is_bit_exact(saved):
    model, path = saved
    x, _ = _data(16)
    loaded = ts.export.load_compact(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(_wrappers(model), _wrappers(loaded)):
        for u, v in zip(a.effective_weights().values(), b.effective_weights().values()):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v))
        for u, v in zip(a.masks, b.masks):
            np.testing.assert_array_equal(u.numpy(), v.numpy())
    # The loaded model trains on.
    loaded.compile("sgd", LOSS)
    loaded.fit(*_data(8), verbose=0)


def test_frozen_values_are_not_in_the_file(saved):
    model, path = saved
    _, header, payload = _split(path)
    entries = header["variables"]
    assert [e["kind"] for e in entries].count("trained") == 2
    assert header["seeds"] == [9]
    # Every payload byte is accounted for: dense variables whole, and for the
    # trained variables of Frozen weights their positions and the values there.
    accounted = 0
    for entry, variable in zip(entries, model.weights):
        size = int(np.prod(variable.shape))
        if entry["kind"] == "dense":
            assert entry["nbytes"] == 4 * size or variable.dtype != "float32"
            accounted += entry["nbytes"]
        elif entry["kind"] == "trained":
            mask = next(layer.masks[0] for layer in _wrappers(model) if layer.prunable_weights[0] is variable)
            assert entry["count"] == int(mask.numpy().sum()) < size
            assert entry["values"]["nbytes"] == 4 * entry["count"]
            assert entry["positions"]["nbytes"] <= -(-size // 8)
            accounted += entry["values"]["nbytes"] + entry["positions"]["nbytes"]
    assert accounted == len(payload)


@pytest.mark.slow
def test_round_trip_in_another_process(saved, tmp_path):
    model, path = saved
    x, _ = _data(8)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np
        import tfsparse as ts
        model = ts.export.load_compact({path!r})
        np.save({str(tmp_path / "y.npy")!r}, model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0))


@pytest.mark.parametrize("count", [0, 1, 5, 300, 2000, 4096])
def test_positions_round_trip_with_the_smaller_encoding(count):
    size = 4096
    positions = np.sort(np.random.choice(size, count, replace=False))
    if count:
        positions[-1] = size - 1  # the last position, and large gaps at low counts
    positions = np.unique(positions)
    encoding, encoded = compact._encode_positions(positions, size)
    gaps = np.diff(positions, prepend=-1) - 1
    varint_bytes = sum(max(1, -(-int(g).bit_length() // 7)) for g in gaps)
    bitmap_bytes = size // 8
    assert encoding == ("delta" if varint_bytes <= bitmap_bytes else "bitmap")
    assert encoded.size == min(varint_bytes, bitmap_bytes)
    entry = {"path": "w", "count": positions.size, "encoding": encoding, "positions": {"offset": 0, "nbytes": encoded.size}}
    decoded = compact._decode_positions(encoded.tobytes(), entry, size, "file")
    np.testing.assert_array_equal(decoded, positions)


def test_large_gaps_use_multi_byte_varints():
    gaps = np.array([0, 127, 128, 2**14, 2**21 + 5, 2**35], np.uint64)
    encoded = compact._varint_encode(gaps)
    assert encoded.size == 1 + 1 + 2 + 3 + 4 + 6
    np.testing.assert_array_equal(compact._varint_decode(encoded, gaps.size, "file"), gaps)


def test_damaged_truncated_and_foreign_files_are_rejected(saved, tmp_path):
    _, path = saved
    data = open(path, "rb").read()
    cases = {
        "flipped": data[:200] + bytes([data[200] ^ 1]) + data[201:],
        "truncated": data[: len(data) * 3 // 4],
        "empty": b"",
        "not_compact": b"PK\x03\x04" + data[4:],
        "version": _resealed(data[:8] + struct.pack("<I", compact.FORMAT_VERSION + 1) + data[12:-32]),
    }
    messages = {
        "flipped": "checksum",
        "truncated": "checksum",
        "empty": "not a tfsparse compact checkpoint",
        "not_compact": "not a tfsparse compact checkpoint",
        "version": "format version",
    }
    for name, content in cases.items():
        target = tmp_path / f"{name}.tfsparse"
        target.write_bytes(content)
        with pytest.raises(CompactFileError, match=messages[name]):
            ts.export.load_compact(str(target))


def test_consistent_but_wrong_files_are_rejected(saved, tmp_path):
    """Files with a valid checksum whose content is wrong still never load."""
    _, path = saved

    def generator(header):
        header["generator"]["version"] += 1

    def positions(header):
        entry = next(e for e in header["variables"] if e["kind"] == "trained")
        entry["count"] += 1

    def shape(header):
        header["variables"][0]["shape"][0] += 1

    def fingerprint(header):
        config = json.dumps(header["model"])
        header["model"] = json.loads(config.replace('"fingerprints": {"kernel": "', '"fingerprints": {"kernel": "0'))

    def code(header):
        header["model"]["config"]["layers"].append({"class_name": "__lambda__", "config": {"code": "AAAA"}})

    expected = {
        generator: "generator",
        positions: "bad position",
        shape: "stored as",
        fingerprint: "regenerate differently",
        code: "Python code",
    }
    for change, message in expected.items():
        target = tmp_path / f"{change.__name__}.tfsparse"
        _rewrite(path, target, change)
        with pytest.raises(CompactFileError, match=message):
            ts.export.load_compact(str(target))


def test_freezenet_lenet_300_100_round_trip(tmp_path):
    x, y = np.random.rand(16, 28, 28, 1).astype("float32"), np.random.randint(0, 10, 16)
    model = ts.freezenet(ts.models.lenet_300_100(), 0.99, (x, y), seed=3)
    path = str(tmp_path / "lenet.tfsparse")
    ts.export.save_compact(model, path)
    loaded = ts.export.load_compact(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    dense = str(tmp_path / "dense.keras")
    ts.models.lenet_300_100().save(dense)
    # One percent of the weights, their positions and the biases: far below the dense file.
    assert 10 * os.path.getsize(path) < os.path.getsize(dense)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="model"):
        ts.export.save_compact("model", str(tmp_path / "m"))
    with pytest.raises(TypeError, match="path"):
        ts.export.save_compact(_mixed_model(), 3)
    with pytest.raises(TypeError, match="path"):
        ts.export.load_compact(None)


def _split(path):
    data = open(path, "rb").read()
    _, version, size = struct.unpack_from("<8sII", data)
    header = json.loads(zlib.decompress(data[16:16 + size]))
    return data, header, data[16 + size:-32]


def _header(path):
    return _split(path)[1]


def _rewrite(path, target, change):
    """Writes `path` with its header changed by `change`, with a valid checksum."""
    data, header, payload = _split(path)
    change(header)
    packed = zlib.compress(json.dumps(header).encode())
    body = data[:12] + struct.pack("<I", len(packed)) + packed + payload
    target.write_bytes(body + hashlib.sha256(body).digest())


class _Net(keras.Model):
    """A subclassed model, made into a FreezeNet model in place."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.head = keras.layers.Dense(3)

    def call(self, x, training=None):
        return self.head(self.hidden(self.flatten(x)))


@keras.saving.register_keras_serializable(package="tfsparse_tests")
class RegisteredNet(_Net):
    """The same network, registered, so that `load_compact` can rebuild it."""


def _lambda_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: 2.0 * t, name="double")(x)
    return keras.Model(inputs, Frozen(keras.layers.Dense(3), seed=1)(x))


def _subclassed_freezenet(cls):
    net = cls(name="net")
    x, y = _data(8)
    net(x)
    return ts.freezenet(net, 0.5, (x, y), seed=1)


@pytest.mark.parametrize(
    "make, message",
    [
        (_lambda_model, r"Lambda layers: \['double'\].*never runs code"),
        (lambda: _subclassed_freezenet(_Net), r"cannot be rebuilt from its config.*Could not locate class.*subclassed"),
        (lambda: _subclassed_freezenet(RegisteredNet), r"rebuilds from its config with other variables.*subclassed"),
    ],
    ids=["lambda", "subclassed", "registered_subclassed"],
)
def test_models_that_cannot_be_loaded_are_refused_at_save_time(make, message, tmp_path):
    path = tmp_path / "model.tfsparse"
    with pytest.raises(ValueError, match=message):
        ts.export.save_compact(make(), str(path))
    assert os.listdir(tmp_path) == []


class UnregisteredAdam(keras.optimizers.Adam):
    """An optimizer class that Keras cannot deserialize."""


def test_compile_state_is_not_stored_and_an_unregistered_optimizer_does_not_matter(tmp_path):
    model = _mixed_model()
    model.compile(UnregisteredAdam(0.01), LOSS)
    model.fit(*_data(8), verbose=0)
    path = str(tmp_path / "model.tfsparse")
    ts.export.save_compact(model, path)
    loaded = ts.export.load_compact(path)
    assert not loaded.compiled
    x, _ = _data(4)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def _resealed(body):
    """`body` (a file without its checksum) with a valid SHA-256 appended."""
    return body + hashlib.sha256(body).digest()


def test_the_checksum_is_checked_before_the_version(saved, tmp_path):
    _, path = saved
    data = open(path, "rb").read()
    flipped = data[:8] + bytes([data[8] ^ 1]) + data[9:]
    target = tmp_path / "flipped_version.tfsparse"
    target.write_bytes(flipped)
    with pytest.raises(CompactFileError, match="its SHA-256 checksum does not match"):
        ts.export.load_compact(str(target))
    target.write_bytes(_resealed(flipped[:-32]))
    with pytest.raises(CompactFileError, match=f"format version {compact.FORMAT_VERSION ^ 1}"):
        ts.export.load_compact(str(target))


def test_special_files_are_refused_before_reading(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for special in (str(fifo), "/dev/zero", str(tmp_path)):
        with pytest.raises(CompactFileError, match="not a regular file"):
            ts.export.load_compact(special)


def test_a_header_size_beyond_the_file_is_refused_from_the_prefix(saved, tmp_path):
    _, path = saved
    data = open(path, "rb").read()
    target = tmp_path / "long_header.tfsparse"
    target.write_bytes(_resealed(data[:12] + struct.pack("<I", 2**32 - 1) + data[16:-32]))
    with pytest.raises(CompactFileError, match="announces a header of 4294967295 bytes"):
        ts.export.load_compact(str(target))


def test_a_header_that_inflates_beyond_the_limit_is_refused(saved, tmp_path):
    _, path = saved
    data, _, payload = _split(path)
    packed = zlib.compress(b" " * (compact.MAX_HEADER_BYTES + 1), 9)
    target = tmp_path / "bomb.tfsparse"
    target.write_bytes(_resealed(data[:12] + struct.pack("<I", len(packed)) + packed + payload))
    with pytest.raises(CompactFileError, match=f"header inflates beyond {compact.MAX_HEADER_BYTES} bytes"):
        ts.export.load_compact(str(target))


def test_a_deeply_nested_header_raises_the_documented_error(saved, tmp_path):
    _, path = saved
    data, header, payload = _split(path)
    header["model"]["config"]["nested"] = "NESTED"
    text = json.dumps(header).replace('"NESTED"', "[" * 100_000 + "]" * 100_000)
    packed = zlib.compress(text.encode())
    target = tmp_path / "nested.tfsparse"
    target.write_bytes(_resealed(data[:12] + struct.pack("<I", len(packed)) + packed + payload))
    with pytest.raises(CompactFileError, match="malformed header"):
        ts.export.load_compact(str(target))


def test_a_huge_declared_model_is_refused_before_any_layer_is_built(tmp_path):
    inputs = keras.Input((32,))
    model = keras.Model(inputs, Frozen(keras.layers.Dense(16, name="wide"), seed=1)(inputs))
    path = tmp_path / "model.tfsparse"
    ts.export.save_compact(model, str(path))

    def widen(header):  # 2**31 units: 2**36 weights, 256 GiB of float32
        header["model"] = json.loads(json.dumps(header["model"]).replace('"units": 16', f'"units": {2**31}'))

    target = tmp_path / "huge.tfsparse"
    _rewrite(path, target, widen)
    with pytest.raises(CompactFileError, match=rf"declares {2**36 + 2**31} parameters.*`max_parameters`"):
        ts.export.load_compact(str(target))


def test_max_parameters_bounds_the_weights_the_file_does_not_carry(saved):
    model, path = saved
    frozen = sum(int(np.prod(w.shape)) - int(np.sum(m.numpy())) for f in _wrappers(model) if isinstance(f, Frozen)
                 for w, m in zip(f.prunable_weights, f.masks))
    with pytest.raises(CompactFileError, match=r"`max_parameters` \(10\)"):
        ts.export.load_compact(path, max_parameters=10)
    assert ts.export.load_compact(path, max_parameters=frozen).count_params() == model.count_params()
    with pytest.raises(ValueError, match="max_parameters"):
        ts.export.load_compact(path, max_parameters=-1)


def _swap_first_two_dense_arrays(header):
    first, second = [e for e in header["variables"] if e["kind"] == "dense" and e["nbytes"] == 4 * 16][:2]
    first["offset"], second["offset"] = second["offset"], first["offset"]


def _overlap_two_arrays(header):
    first, second = [e for e in header["variables"] if e["kind"] == "dense"][:2]
    second["offset"] = first["offset"]


def _rename_a_variable(header):
    header["variables"][0]["path"] = header["variables"][1]["path"]


@pytest.mark.parametrize(
    "change, message",
    [
        (_swap_first_two_dense_arrays, "do not tile the payload"),
        (_overlap_two_arrays, "do not tile the payload"),
        (_rename_a_variable, "is stored for variable"),
    ],
)
def test_arrays_tile_the_payload_and_load_into_their_own_variables(saved, tmp_path, change, message):
    _, path = saved
    target = tmp_path / "moved.tfsparse"
    _rewrite(path, target, change)
    with pytest.raises(CompactFileError, match=message):
        ts.export.load_compact(str(target))


@keras.saving.register_keras_serializable(package="tfsparse_tests")
class SafeModeProbe(keras.layers.Layer):
    """A layer that records whether Keras deserializes it in safe mode."""

    seen = []

    def call(self, inputs):
        return inputs

    @classmethod
    def from_config(cls, config):
        from keras.src.saving import serialization_lib

        cls.seen.append(serialization_lib.in_safe_mode())
        return super().from_config(config)


@pytest.fixture
def unsafe_deserialization():
    from keras.src.saving import serialization_lib

    before = serialization_lib.in_safe_mode()
    keras.config.enable_unsafe_deserialization()
    yield
    serialization_lib.SafeModeScope(before).__enter__()


def test_loading_stays_in_safe_mode_when_the_process_allowed_unsafe_code(tmp_path, unsafe_deserialization):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, Frozen(keras.layers.Dense(2), seed=1)(SafeModeProbe()(inputs)))
    path = str(tmp_path / "probe.tfsparse")
    ts.export.save_compact(model, path)
    SafeModeProbe.seen.clear()
    ts.export.load_compact(path)
    assert SafeModeProbe.seen and all(SafeModeProbe.seen)


def test_a_compile_config_in_the_file_is_ignored(saved, tmp_path):
    _, path = saved
    compiled = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    compiled.compile("adam", "mse")
    compile_config = keras.saving.serialize_keras_object(compiled)["compile_config"]

    def add_compile_config(header):
        header["model"]["compile_config"] = compile_config

    target = tmp_path / "compiled.tfsparse"
    _rewrite(path, target, add_compile_config)
    assert not ts.export.load_compact(str(target)).compiled


def test_a_header_beyond_the_limit_is_refused_at_save_time(tmp_path, monkeypatch):
    monkeypatch.setattr(compact, "MAX_HEADER_BYTES", 1000)
    with pytest.raises(ValueError, match=r"needs a header of \d+ bytes.*at most 1000 bytes"):
        ts.export.save_compact(_mixed_model(), str(tmp_path / "model.tfsparse"))
    assert os.listdir(tmp_path) == []
