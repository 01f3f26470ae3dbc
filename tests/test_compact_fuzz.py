"""Damaged and crafted compact files: the only outcomes are an identical model or `CompactFileError`.

Each case is bounded in time (Hypothesis' deadline, the 10 s the loader is
allowed) and in the memory Python allocates for it (`tracemalloc`: file
bytes, the inflated header, NumPy arrays). TensorFlow's own allocations are
bounded by the loader's `max_parameters` check, tested in test_compact.py.
"""

import hashlib
import json
import struct
import tracemalloc
import zlib

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfsparse as ts
from tfsparse.export import CompactFileError
from tfsparse.layers import Frozen, Masked

FUZZ = settings(max_examples=25, deadline=10_000, derandomize=True, database=None)
MEMORY_LIMIT = 64 * 2**20
X = np.linspace(-1.0, 1.0, 12, dtype="float32").reshape(3, 4)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """`(model, file bytes)` of a small FreezeNet-style model."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    x = Frozen(keras.layers.Dense(8, activation="relu", name="hidden"), seed=5)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, Masked(keras.layers.Dense(3, name="head"))(x))
    for layer in (model.layers[1], model.layers[3]):
        layer.set_masks([np.random.rand(*w.shape) < 0.5 for w in layer.prunable_weights])
    path = tmp_path_factory.mktemp("fuzz") / "model.tfsparse"
    ts.export.save_compact(model, str(path))
    return model, path.read_bytes()


def _check_outcome(content, model, tmp_path_factory):
    """Loads `content`: it must give `model` again or raise CompactFileError, within the memory bound."""
    path = tmp_path_factory.mktemp("case") / "case.tfsparse"
    path.write_bytes(content)
    tracemalloc.start()
    try:
        loaded = ts.export.load_compact(str(path))
    except CompactFileError:
        loaded = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT
    if loaded is not None:
        for a, b in zip(model.weights, loaded.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))


def _seal(body):
    return body + hashlib.sha256(body).digest()


def _parts(content):
    header_size = struct.unpack_from("<I", content, 12)[0]
    header = json.loads(zlib.decompress(content[16:16 + header_size]))
    return content[:12], header, content[16 + header_size:-32]


def _leaves(value, prefix=()):
    """Key paths of every value in the header outside the model config."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return [prefix]
    found = [prefix] if prefix else []
    for key, item in items:
        if prefix or key != "model":
            found += _leaves(item, prefix + (key,))
    return found


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 2**40), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)), min_size=1, max_size=4))
def test_bit_flips(original, tmp_path_factory, flips):
    model, content = original
    data = bytearray(content)
    for index, bit in flips:
        data[index % len(data)] ^= 1 << bit
    _check_outcome(bytes(data), model, tmp_path_factory)


@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True), reseal=st.booleans())
def test_truncations(original, tmp_path_factory, fraction, reseal):
    model, content = original
    cut = content[: int(fraction * len(content))]
    _check_outcome(_seal(cut[:-32]) if reseal and len(cut) > 32 else cut, model, tmp_path_factory)


@FUZZ
@given(data=st.data())
def test_header_mutations_with_a_valid_checksum(original, tmp_path_factory, data):
    model, content = original
    prefix, header, payload = _parts(content)
    key_path = data.draw(st.sampled_from(sorted(_leaves(header), key=repr)))
    *parents, last = key_path
    target = header
    for key in parents:
        target = target[key]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[last]
    else:
        target[last] = data.draw(JSON_VALUES)
    packed = zlib.compress(json.dumps(header).encode())
    _check_outcome(_seal(prefix + struct.pack("<I", len(packed)) + packed + payload), model, tmp_path_factory)


def _array_records(header):
    """The `{offset, nbytes}` record of every array in the payload."""
    records = []
    for entry in header["variables"]:
        records += [entry] if "offset" in entry else [entry[k] for k in ("positions", "values") if k in entry]
    return records


@FUZZ
@given(data=st.data())
def test_moved_arrays_with_a_valid_checksum(original, tmp_path_factory, data):
    model, content = original
    prefix, header, payload = _parts(content)
    record = data.draw(st.sampled_from(_array_records(header)))
    record["offset"] = data.draw(st.integers(0, len(payload)))
    if data.draw(st.booleans()):
        record["nbytes"] = data.draw(st.integers(0, len(payload)))
    packed = zlib.compress(json.dumps(header).encode())
    _check_outcome(_seal(prefix + struct.pack("<I", len(packed)) + packed + payload), model, tmp_path_factory)


@FUZZ
@given(header_size=st.integers(0, 2**32 - 1), version=st.integers(0, 2**32 - 1))
def test_crafted_prefixes_with_a_valid_checksum(original, tmp_path_factory, header_size, version):
    model, content = original
    body = content[:8] + struct.pack("<II", version, header_size) + content[16:-32]
    _check_outcome(_seal(body), model, tmp_path_factory)


def test_the_unchanged_file_loads_identically(original, tmp_path_factory):
    model, content = original
    _check_outcome(content, model, tmp_path_factory)
