"""Compact checkpoints: a model's config, seed, trained positions and values.

File layout (all integers little-endian):

| bytes | content |
|---|---|
| 8 | `MAGIC` |
| 4 | format version (`FORMAT_VERSION`) |
| 4 | length `h` of the header |
| h | zlib-compressed UTF-8 JSON header |
| ... | payload: raw little-endian arrays, at offsets given by the header |
| 32 | SHA-256 of every byte before it |

The header holds the Keras model config, the frozen-weight generator
(name and version) and seeds, and one entry per variable of the model, in
`model.weights` order, named by its layer's path in the model and its
own name (version 2; version 1 used `variable.path`, which changes when a
model is rebuilt): its arrays follow each other in the payload, without
gaps, in that order. `"dense"` variables are stored whole; the
trainable variable of a `tfsparse.layers.Frozen` weight (`"trained"`)
stores only the positions where its mask is 1 (gaps between positions as
LEB128 varints, or a bitmap, whichever is smaller) and the values there,
its mask (`"mask"`) is rebuilt from those positions. Frozen values are
never stored: loading regenerates them from the seed, and the `Frozen`
layers' configs carry SHA-256 fingerprints of them that building checks.
"""

import copy
import hashlib
import json
import math
import os
import stat
import struct
import zlib

import keras
import numpy as np
import tensorflow as tf

from tfsparse.checks import check_model, check_non_negative_int
from tfsparse.keras_internals import safe_deserialization, shape_only_variables
from tfsparse.layers.frozen import GENERATOR, GENERATOR_VERSION, Frozen
from tfsparse.layers.wrapper import ParametrizedWrapper
from tfsparse.surgery.clone import is_graph_model
from tfsparse.walk import named_layers

MAGIC = b"TFSPCMPT"
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<8sII")
_DIGEST_SIZE = hashlib.sha256().digest_size
DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)
ENCODINGS = ("delta", "bitmap")
_VARINT_MAX_BYTES = 9  # 63-bit positions
# The largest header `load_compact` inflates: a model config of thousands of
# layers and its variable records fit many times over; `save_compact`
# refuses a model whose header would be larger.
MAX_HEADER_BYTES = 2**22
# The default bound on the parameters a file declares but does not carry
# (frozen values regenerated from the seed): see `load_compact`.
DEFAULT_MAX_PARAMETERS = 2**25


class CompactFileError(ValueError):
    """A compact checkpoint that is damaged, truncated or of another version."""


def save_compact(model, path):
    """Writes a compact checkpoint of a model, FreezeNet models above all.

    For `tfsparse.layers.Frozen` weights only the trained entries are
    stored (their positions and values); the frozen ones are regenerated
    from the seed when loading. Every other variable (biases, plain layers,
    normalization statistics, other wrappers' state) is stored whole. The
    optimizer state is not stored. The file is written to a temporary name
    and renamed, so an interrupted save never leaves a partial file at
    `path`.

    A file is written only if `load_compact` can read it: the model is
    rebuilt once from the config about to be written, as `load_compact`
    will, and must give the same variables. Models that cannot be rebuilt
    are refused: a `Lambda` layer (`load_compact` never runs code from a
    file), a subclassed model whose layers tfsparse replaced in place (its
    config describes the original layers), a class that is not registered.
    Classes registered with `keras.saving.register_keras_serializable` must
    also be imported in the process that loads the file.

    Args:
        model: a built Keras model.
        path: the file to write (e.g. `"model.tfsparse"`).

    Raises:
        TypeError: if `model` is not a Keras model or `path` is not a path.
        ValueError: if the model is not built, holds a variable of a dtype
            the format does not store (see `DTYPES`), cannot be rebuilt
            from its config (the message says why), or its header would
            exceed `MAX_HEADER_BYTES`.

    Example:

    >>> frozen = tfsparse.freezenet(model, 0.9, train_ds, seed=7)
    >>> tfsparse.export.save_compact(frozen, "model.tfsparse")
    >>> restored = tfsparse.export.load_compact("model.tfsparse")
    >>> bool(np.array_equal(restored.predict(x, verbose=0), frozen.predict(x, verbose=0)))
    True
    """
    check_model(model)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Argument `path` must be a str or os.PathLike, received: {path!r}.")
    payload = bytearray()

    def put(array):
        entry = {"offset": len(payload), "nbytes": array.nbytes}
        payload.extend(_little_endian(array).tobytes())
        return entry

    entries = []
    for (variable, role), name in zip(_roles(model), _variable_paths(model)):
        value = np.asarray(keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(variable)))
        entry = {"path": name, "dtype": _dtype(variable), "shape": list(value.shape), "kind": role[0]}
        if role[0] == "trained":
            layer, index = role[1], role[2]
            mask = np.asarray(keras.ops.convert_to_numpy(layer.masks[index])).reshape(-1) != 0
            positions = np.flatnonzero(mask)
            encoding, encoded = _encode_positions(positions, mask.size)
            entry.update(
                count=int(positions.size),
                encoding=encoding,
                positions=put(encoded),
                values=put(value.reshape(-1)[positions]),
            )
        elif role[0] == "dense":
            entry.update(put(value))
        entries.append(entry)
    config = _without_compile_state(keras.saving.serialize_keras_object(model))
    _check_rebuilds(model, config)
    header = {
        "model": config,
        "generator": {"name": GENERATOR, "version": GENERATOR_VERSION},
        "seeds": sorted({layer.seed for layer in _frozen_layers(model)}),
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
        "variables": entries,
        "payload_bytes": len(payload),
    }
    text = json.dumps(header).encode("utf-8")
    if len(text) > MAX_HEADER_BYTES:
        raise ValueError(
            f"Argument `model` ({model.name!r}) needs a header of {len(text)} bytes; compact checkpoints "
            f"hold headers of at most {MAX_HEADER_BYTES} bytes (`MAX_HEADER_BYTES`)."
        )
    packed = zlib.compress(text, 9)
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(packed)) + packed + bytes(payload)
    partial = f"{os.fspath(path)}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as file:
            file.write(body + hashlib.sha256(body).digest())
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_compact(path, max_parameters=DEFAULT_MAX_PARAMETERS):
    """Rebuilds a model from a compact checkpoint written by `save_compact`.

    The model is rebuilt from its config; `Frozen` layers regenerate their
    frozen values from the seed (and check them against the recorded
    fingerprints), then every variable gets its stored values. The outputs
    are bit-identical to those of the saved model. Nothing in the file is
    executed: it holds JSON and raw arrays only, configs with serialized
    Python code (`Lambda` layers) are refused, and Keras deserializes in
    safe mode even if the process called
    `keras.config.enable_unsafe_deserialization()`.

    The file is checked before anything is allocated for it: only a regular
    file is opened; the prefix (magic, header size) is checked before the
    rest is read; the checksum before the format version; the header must
    inflate to at most `MAX_HEADER_BYTES`; its arrays must tile the payload
    in order, each one sized by its variable's shape and dtype. The model
    config is then built once with shapes only (no values allocated) and
    counted: the parameters the file does not carry, the frozen values that
    loading regenerates from the seed, must be at most `max_parameters`
    (every other parameter is carried in the payload, so the file's own size
    bounds it). Only then is the model built, its variables compared one by
    one (path, role, shape, dtype) with the recorded ones, and set. A model
    is returned only if everything loaded.

    Args:
        path: a file written by `save_compact`.
        max_parameters: the largest number of parameters the file may
            declare beyond those it carries, an integer >= 0. The default,
            `DEFAULT_MAX_PARAMETERS` (2**25, about 33.5 million, some 512
            MiB of float32 kernels and their frozen copies), admits models
            the size of VGG-16 on CIFAR-10; raise it for larger ones.

    Returns:
        A built `keras.Model`, not compiled.

    Raises:
        TypeError: if `path` is not a path.
        ValueError: if `max_parameters` is not an integer >= 0.
        OSError: if the file cannot be opened.
        CompactFileError (a `ValueError`): if the file is not a regular
            file or not a compact checkpoint, is truncated or damaged
            (checksum mismatch), has another format or generator version, is
            malformed (sizes, nesting, layout), declares more parameters
            than allowed, or does not match the model its config builds.

    Example:

    >>> tfsparse.export.save_compact(tfsparse.freezenet(model, 0.9, train_ds, seed=7), "model.tfsparse")
    >>> restored = tfsparse.export.load_compact("model.tfsparse")
    >>> restored.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # then train on
    >>> [layer.seed for layer in restored.layers if isinstance(layer, tfsparse.layers.Frozen)]
    [7, 7, 7, 7]
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Argument `path` must be a str or os.PathLike, received: {path!r}.")
    max_parameters = check_non_negative_int(max_parameters, "max_parameters")
    data = _read_file(path)
    try:
        header, payload = _read(data, path)
        carried = _check_layout(header["variables"], len(payload), path)
        config = _without_compile_state(header["model"])
        _check_parameters(config, carried, max_parameters, path)
        model = _build(config, path)
        values = _decode(model, header["variables"], payload, path)
    except (AttributeError, IndexError, KeyError, TypeError, RecursionError) as error:
        raise CompactFileError(f"{path!s} has a malformed header: {error!r}.") from None
    for variable, value in values:
        variable.assign(value)
    return model


def _read_file(path):
    """Returns the bytes of a regular file whose prefix looks like a compact checkpoint."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise CompactFileError(f"{path!s} is not a regular file; compact checkpoints are regular files.")
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        prefix = file.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size or prefix[:len(MAGIC)] != MAGIC:
            raise CompactFileError(f"{path!s} is not a tfsparse compact checkpoint (or is truncated).")
        header_size = _PREFIX.unpack(prefix)[2]
        if header_size > size - _PREFIX.size - _DIGEST_SIZE:
            raise CompactFileError(
                f"{path!s} is damaged or truncated: it announces a header of {header_size} bytes, "
                f"the file holds {size} bytes in all."
            )
        data = prefix + file.read(size - _PREFIX.size)
    if len(data) != size:
        raise CompactFileError(f"{path!s} changed while it was read.")
    return data


def _read(data, path):
    """Checks checksum, version and header; returns (header, payload)."""
    body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != digest:
        raise CompactFileError(f"{path!s} is damaged or truncated: its SHA-256 checksum does not match.")
    _, version, header_size = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CompactFileError(
            f"{path!s} has compact format version {version}; this tfsparse reads version "
            f"{FORMAT_VERSION}. Load it with the tfsparse version that wrote it."
        )
    header = _parse_header(body[_PREFIX.size:_PREFIX.size + header_size], path)
    payload = body[_PREFIX.size + header_size:]
    if header.get("payload_bytes") != len(payload):
        raise CompactFileError(
            f"{path!s} is damaged: the header announces {header.get('payload_bytes')} payload bytes, "
            f"the file holds {len(payload)}."
        )
    generator = {"name": GENERATOR, "version": GENERATOR_VERSION}
    if header["seeds"] and header.get("generator") != generator:
        raise CompactFileError(
            f"{path!s} was written with frozen-weight generator {header.get('generator')}; this "
            f"tfsparse has {generator} and cannot regenerate its frozen weights."
        )
    return header, payload


def _parse_header(packed, path):
    """Inflates (at most `MAX_HEADER_BYTES`) and parses the JSON header."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(packed, MAX_HEADER_BYTES + 1)
    except zlib.error as error:
        raise CompactFileError(f"{path!s} has an unreadable header: {error}.") from None
    if len(text) > MAX_HEADER_BYTES:
        raise CompactFileError(f"{path!s} is refused: its header inflates beyond {MAX_HEADER_BYTES} bytes.")
    if not inflater.eof or inflater.unused_data:
        raise CompactFileError(f"{path!s} has an unreadable header: the compressed stream is cut or followed by data.")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CompactFileError(f"{path!s} has a malformed header: {error!r}.") from None
    if not isinstance(header, dict):
        raise CompactFileError(f"{path!s} has a malformed header: not a JSON object.")
    return header


def _arrays(entry):
    """The `{offset, nbytes}` records of an entry's arrays, in file order."""
    if entry["kind"] == "dense":
        return [entry]
    if entry["kind"] == "trained":
        return [entry["positions"], entry["values"]]
    return []


def _check_layout(entries, payload_size, path):
    """Checks that the entries' arrays tile the payload in order and match
    their shapes; returns the number of parameters the file carries."""
    offset, carried = 0, 0
    for entry in entries:
        if entry["kind"] not in ("dense", "trained", "mask") or entry["dtype"] not in DTYPES:
            raise CompactFileError(f"{path!s} is damaged: variable {entry['path']!r} has an unknown kind or dtype.")
        if not all(_is_count(d) for d in entry["shape"]):
            raise CompactFileError(f"{path!s} is damaged: variable {entry['path']!r} has a bad shape.")
        for array in _arrays(entry):
            if not (_is_count(array["nbytes"]) and array["offset"] == offset):
                raise CompactFileError(
                    f"{path!s} is damaged: the arrays do not tile the payload (variable {entry['path']!r} "
                    f"is not at offset {offset})."
                )
            offset += array["nbytes"]
        itemsize = np.dtype(entry["dtype"]).itemsize
        size = math.prod(entry["shape"])
        if entry["kind"] == "dense":
            if entry["nbytes"] != size * itemsize:
                raise CompactFileError(f"{path!s} is damaged: the array of {entry['path']!r} has the wrong size.")
            carried += size
        elif entry["kind"] == "trained":
            count = entry["count"]
            if not (_is_count(count) and count <= size and entry["values"]["nbytes"] == count * itemsize):
                raise CompactFileError(f"{path!s} is damaged: bad positions of {entry['path']!r}.")
            carried += count
    if offset != payload_size:
        raise CompactFileError(
            f"{path!s} is damaged: the arrays do not tile the payload ({offset} of {payload_size} bytes)."
        )
    return carried


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_parameters(config, carried, max_parameters, path):
    """Builds `config` with shapes only and bounds the parameters it declares."""
    _check_no_code(config, path)
    try:
        with safe_deserialization(), shape_only_variables():
            model = keras.saving.deserialize_keras_object(_unwrapped(config), safe_mode=True)
            declared = sum(math.prod(v.shape) for v in model.weights) if isinstance(model, keras.Model) else 0
    except Exception as error:  # any failure to rebuild is a bad file for the caller
        raise CompactFileError(f"{path!s}: the model config cannot be rebuilt: {error}") from error
    if declared - carried > max_parameters:
        raise CompactFileError(
            f"{path!s} is refused: its config declares {declared} parameters, {declared - carried} more than "
            f"the file carries, above `max_parameters` ({max_parameters}). Pass a larger `max_parameters` "
            f"to `load_compact` if the file is trusted."
        )


def _unwrapped(config):
    """`config` with every tfsparse wrapper replaced by the layer it wraps.

    Wrappers build their own state (frozen values drawn from the seed); the
    layers they wrap declare the same parameters and build with shapes only.
    """
    if isinstance(config, list):
        return [_unwrapped(v) for v in config]
    if not isinstance(config, dict):
        return config
    inner = config.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("layer"), dict) and _is_wrapper(config):
        return {**config, **{k: v for k, v in _unwrapped(inner["layer"]).items() if k != "name"}}
    return {k: _unwrapped(v) for k, v in config.items()}


def _is_wrapper(config):
    cls = keras.saving.get_registered_object(str(config.get("registered_name")))
    return isinstance(cls, type) and issubclass(cls, ParametrizedWrapper)


def _check_no_code(config, path):
    if _has_code(config):
        raise CompactFileError(f"{path!s} holds serialized Python code (a Lambda layer); it is not loaded.")


def _build(config, path):
    _check_no_code(config, path)
    try:
        with safe_deserialization():
            model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as error:  # any failure to rebuild is a bad file for the caller
        raise CompactFileError(f"{path!s}: the model config cannot be rebuilt: {error}") from error
    if not isinstance(model, keras.Model) or not model.built:
        raise CompactFileError(f"{path!s} does not describe a built Keras model.")
    return model


def _check_rebuilds(model, config):
    """Raises ValueError unless `config` rebuilds a model with `model`'s variables."""
    code = [path for path, layer in named_layers(model) if isinstance(layer, keras.layers.Lambda)]
    if _has_code(config):
        raise ValueError(
            f"Argument `model` ({model.name!r}) holds serialized Python code (Lambda layers: {code}); "
            f"`load_compact` never runs code from a file, so it could not read this checkpoint. Replace "
            f"each Lambda by a layer class registered with `keras.saving.register_keras_serializable`."
        )
    hint = (
        ""
        if is_graph_model(model)
        else " A subclassed model is rebuilt by its class from `get_config`, which does not describe layers "
        "that tfsparse replaced in place; build the model as a functional or Sequential model."
    )
    try:
        rebuilt = _build(copy.deepcopy(config), f"the config of {model.name!r}")
    except CompactFileError as error:
        raise ValueError(
            f"Argument `model` ({type(model).__name__} {model.name!r}) cannot be rebuilt from its config, "
            f"so `load_compact` could not read its checkpoint: {error}.{hint}"
        ) from error
    if _signature(rebuilt) != _signature(model):
        raise ValueError(
            f"Argument `model` ({type(model).__name__} {model.name!r}) rebuilds from its config with other "
            f"variables than it has, so `load_compact` could not read its checkpoint.{hint}"
        )


def _without_compile_state(config):
    """`config` without the compile configs that Keras adds to compiled models.

    The optimizer state is not stored, and rebuilding would deserialize the
    optimizer (impossible for an unregistered class) and compile the model.
    """
    if isinstance(config, dict):
        return {k: _without_compile_state(v) for k, v in config.items() if k != "compile_config"}
    if isinstance(config, list):
        return [_without_compile_state(v) for v in config]
    return config


def _signature(model):
    """Role, shape and dtype of every variable, in `model.weights` order."""
    return [(role[0], tuple(v.shape), _dtype(v)) for v, role in _roles(model)]


def _decode(model, entries, payload, path):
    """Returns `[(variable, array)]` for every variable, or raises."""
    roles = _roles(model)
    if [e["kind"] for e in entries] != [role[0] for _, role in roles]:
        raise CompactFileError(f"{path!s} does not match the variables of the model its config builds.")
    trained = {}
    result = []
    for entry, (variable, role), name in zip(entries, roles, _variable_paths(model)):
        if entry["path"] != name:
            raise CompactFileError(
                f"{path!s} is damaged: the array of {entry['path']!r} is stored for variable {name!r}."
            )
        shape, dtype = tuple(entry["shape"]), entry["dtype"]
        if shape != tuple(variable.shape) or dtype != _dtype(variable):
            raise CompactFileError(
                f"{path!s}: variable {entry['path']!r} is stored as {dtype}{list(shape)}, the rebuilt "
                f"model has {variable.path!r} as {_dtype(variable)}{list(variable.shape)}."
            )
        size = int(np.prod(shape, dtype=np.int64))
        if role[0] == "dense":
            value = _array(payload, entry, dtype, size, path).reshape(shape)
        elif role[0] == "trained":
            layer, index = role[1], role[2]
            frozen = keras.ops.convert_to_numpy(layer.frozen_weights()[layer.weight_names[index]])
            positions = _decode_positions(payload, entry, size, path)
            value = np.array(frozen).reshape(-1)
            value[positions] = _array(payload, entry["values"], dtype, positions.size, path)
            value = value.reshape(shape)
            trained[(id(layer), index)] = positions
        else:
            value = None  # a mask: filled in below, from its kernel's positions
        result.append((variable, value))
    # Masks follow from the trained positions, wherever their kernels are stored.
    for i, (variable, role) in enumerate(roles):
        if role[0] == "mask":
            value = np.zeros(int(np.prod(variable.shape, dtype=np.int64)), _dtype(variable))
            value[trained[(id(role[1]), role[2])]] = 1
            result[i] = (variable, value.reshape(tuple(variable.shape)))
    return result


def _roles(model):
    """`[(variable, role)]` in `model.weights` order; role is `("dense",)`,
    `("trained", layer, index)` or `("mask", layer, index)`."""
    roles = {}
    for layer in _frozen_layers(model):
        for index, (weight, mask) in enumerate(zip(layer.prunable_weights, layer.masks)):
            roles[id(weight)] = ("trained", layer, index)
            roles[id(mask)] = ("mask", layer, index)
    return [(v, roles.get(id(v), ("dense",))) for v in model.weights]


def _variable_paths(model):
    """A path per variable in `model.weights` order, `"<layer path>/<name>"`.

    Unlike `variable.path`, which depends on the name scope the variable was
    created in, it is the same in a model and in the model rebuilt from its
    config. A variable belongs to the deepest layer that holds it (a
    wrapper holds its wrapped layer's variables).
    """
    owner = {}
    for layer_path, layer in named_layers(model):
        if not isinstance(layer, keras.Model):
            owner.update({id(v): f"{layer_path}/{v.name}" for v in layer.weights})
    return [owner.get(id(v), v.name) for v in model.weights]


def _frozen_layers(model):
    return [layer for _, layer in named_layers(model) if isinstance(layer, Frozen)]


def _dtype(variable):
    dtype = keras.backend.standardize_dtype(variable.dtype)
    if dtype not in DTYPES:
        raise ValueError(
            f"Variable {variable.path!r} has dtype {dtype}; compact checkpoints store {', '.join(DTYPES)}."
        )
    return dtype


def _little_endian(array):
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def _slice(payload, entry, nbytes, path):
    offset = entry["offset"]
    if entry["nbytes"] != nbytes or offset < 0 or offset + nbytes > len(payload):
        raise CompactFileError(f"{path!s} is damaged: an array lies outside the payload or has the wrong size.")
    return payload[offset:offset + nbytes]


def _array(payload, entry, dtype, count, path):
    little = np.dtype(dtype).newbyteorder("<")
    return np.frombuffer(_slice(payload, entry, count * little.itemsize, path), little).astype(dtype)


def _encode_positions(positions, size):
    """Returns `(encoding, uint8 array)`: varint gaps or a bitmap, the smaller."""
    gaps = np.diff(positions, prepend=-1) - 1
    varints = _varint_encode(gaps.astype(np.uint64))
    if varints.size <= (size + 7) // 8:
        return "delta", varints
    bitmap = np.zeros(size, bool)
    bitmap[positions] = True
    return "bitmap", np.packbits(bitmap)


def _decode_positions(payload, entry, size, path):
    count, encoding = entry["count"], entry["encoding"]
    if encoding not in ENCODINGS or not 0 <= count <= size:
        raise CompactFileError(f"{path!s} is damaged: bad positions of {entry['path']!r}.")
    if encoding == "bitmap":
        raw = np.frombuffer(_slice(payload, entry["positions"], (size + 7) // 8, path), np.uint8)
        positions = np.flatnonzero(np.unpackbits(raw, count=size))
    else:
        raw = np.frombuffer(_slice(payload, entry["positions"], entry["positions"]["nbytes"], path), np.uint8)
        gaps = _varint_decode(raw, count, path)
        positions = np.cumsum(gaps + np.uint64(1)).astype(np.int64) - 1
    if positions.size != count or (count and positions[-1] >= size):
        raise CompactFileError(f"{path!s} is damaged: bad positions of {entry['path']!r}.")
    return positions


def _varint_encode(values):
    """LEB128: 7 bits per byte, low bits first, high bit set on all but the last."""
    lengths = np.ones(values.size, np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        lengths += rest > 0
        rest >>= np.uint64(7)
    owner = np.repeat(np.arange(values.size), lengths)
    index = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    low = (values[owner] >> (np.uint64(7) * index.astype(np.uint64))) & np.uint64(0x7F)
    more = np.where(index < lengths[owner] - 1, 0x80, 0)
    return (low.astype(np.uint8) | more.astype(np.uint8)).astype(np.uint8)


def _varint_decode(data, count, path):
    last = np.flatnonzero(data < 0x80)
    first = np.concatenate([[0], last[:-1] + 1]) if last.size else last
    lengths = last - first + 1
    if last.size != count or (data.size and data[-1] >= 0x80) or (count and lengths.max() > _VARINT_MAX_BYTES):
        raise CompactFileError(f"{path!s} is damaged: bad position encoding.")
    if not count:
        return np.zeros(0, np.uint64)
    index = np.arange(data.size) - np.repeat(first, lengths)
    parts = (data & 0x7F).astype(np.uint64) << (np.uint64(7) * index.astype(np.uint64))
    return np.add.reduceat(parts, first)


def _has_code(config):
    """True if a config holds a serialized Python function or lambda."""
    if isinstance(config, dict):
        if config.get("class_name") == "__lambda__":
            return True
        return any(_has_code(v) for v in config.values())
    if isinstance(config, list):
        return any(_has_code(v) for v in config)
    return False
