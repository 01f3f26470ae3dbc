"""`Frozen`: a layer whose untrained weights stay at their seeded random init."""

import hashlib
import json

import keras
import numpy as np

from tfsparse.checks import check_seed
from tfsparse.layers.wrapper import ParametrizedWrapper, select
from tfsparse.registry import initializer_of
from tfsparse.walk import weight_named

# The generator that draws initial values: each layer's own Keras initializer,
# reseeded with a seed derived from (model seed, layer path, weight name).
# Keras' TensorFlow backend draws with `tf.random.stateless_*` (Philox on
# CPU and GPU), so values depend on nothing but the seed, shape, dtype and
# initializer config. Should a Keras or TensorFlow release draw differently,
# the fingerprints that `Frozen` records catch it at build. Bump the version
# whenever the derivation changes.
GENERATOR = "keras-initializer/stateless"
GENERATOR_VERSION = 1

# Initializers that take no seed because they draw nothing.
_DETERMINISTIC = (
    keras.initializers.Zeros,
    keras.initializers.Ones,
    keras.initializers.Constant,
    keras.initializers.Identity,
)


def derive_seed(seed, path, name):
    """Returns the 32-bit seed of weight `name` of the layer at `path`.

    The derivation hashes its inputs with SHA-256, so it depends neither on
    the order in which layers are created nor on the Python process.

    Args:
        seed: the model seed, an integer in `[0, 2**32)`.
        path: the layer's path in its model, e.g. `"block1/conv"`.
        name: the weight's name, e.g. `"kernel"`.

    Returns:
        An integer in `[0, 2**32)`.
    """
    key = json.dumps([GENERATOR, GENERATOR_VERSION, check_seed(seed), str(path), str(name)])
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "little")


def initial_value(layer, name, seed, path):
    """Draws weight `name` of a built `layer` from the seed with its own initializer.

    Args:
        layer: a built Keras layer (not a wrapper).
        name: the name of one of its weights, e.g. `"kernel"`.
        seed: the model seed, an integer in `[0, 2**32)`.
        path: the layer's path in its model (part of the derived seed).

    Returns:
        A tensor of the weight's shape and dtype.

    Raises:
        ValueError: if the layer has no such weight or no initializer for it.
        TypeError: if the initializer is a plain function, or draws random
            values but takes no seed.

    Example:

    >>> dense = keras.layers.Dense(3)
    >>> dense.build((None, 4))
    >>> w = initial_value(dense, "kernel", seed=7, path="dense")
    >>> bool(ops.all(w == initial_value(dense, "kernel", seed=7, path="dense")))
    True
    """
    weight = weight_named(layer, name)
    initializer = initializer_of(layer, name)
    if initializer is None:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no initializer for its "
            f"weight {name!r}, so its initial value cannot be drawn from a seed."
        )
    if not isinstance(initializer, keras.initializers.Initializer):
        raise TypeError(
            f"The initializer of weight {name!r} of layer {layer.name!r} is a plain function "
            f"({getattr(initializer, '__name__', repr(initializer))!r}), which takes no `seed`, so its values "
            f"cannot be regenerated. Use a `keras.initializers.Initializer` that accepts `seed` "
            f"(e.g. 'glorot_uniform')."
        )
    config = initializer.get_config()
    if "seed" in config:
        initializer = initializer.__class__.from_config({**config, "seed": derive_seed(seed, path, name)})
    elif not isinstance(initializer, _DETERMINISTIC):
        raise TypeError(
            f"The initializer of weight {name!r} of layer {layer.name!r} "
            f"({type(initializer).__name__}) takes no `seed`, so its values cannot be "
            f"regenerated. Use a Keras initializer that accepts `seed`."
        )
    return keras.ops.convert_to_tensor(initializer(tuple(weight.shape), dtype=weight.dtype))


def fingerprint(value):
    """Returns the SHA-256 (hex) of an array's little-endian bytes, shape and dtype."""
    array = np.asarray(keras.ops.convert_to_numpy(value))
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    digest = hashlib.sha256(json.dumps([str(array.dtype), list(array.shape)]).encode())
    digest.update(np.ascontiguousarray(little).tobytes())
    return digest.hexdigest()


def _compression(row):
    if row.get("frozen") is None:
        return None
    stored = row["parameters"] - row["frozen"]
    return row["parameters"] / stored if stored else None


@keras.saving.register_keras_serializable(package="tfsparse")
class Frozen(ParametrizedWrapper):
    """Trains the masked entries of a layer's weights; the others stay at their init.

    The effective weight is `where(mask, weight, frozen)`: the wrapped
    layer's own (trainable) variable where the mask is 1, and fixed random
    values where it is 0. The fixed values are the weight's initial values
    drawn from `seed` with the layer's own initializer (see
    `initial_value`). They are constants, not variables: no optimizer sees
    them (momentum, Adam and decoupled weight decay cannot move them) and no
    checkpoint stores them; they are regenerated bit-exactly whenever the
    layer is built, e.g. by `keras.saving.load_model`. Entries of the
    trainable variable where the mask is 0 are never read: the gradient
    passes to the whole variable straight through (one select per step,
    see `select`), and what it does to them has no effect. A layer built
    fresh starts with its trainable variable equal to the frozen values,
    so training starts at the seeded init.

    Used by `tfsparse.freezenet`, which picks the masks. Frozen layers are
    dense at inference: they save storage and trained parameters, not
    FLOPs.

    Args:
        layer: the layer to wrap (a type with prunable weights, see `tfsparse.register_layer`).
        seed: the model seed, an integer in `[0, 2**32)`.
        layer_path: the layer's path in its model (e.g. `"block1/conv"`);
            part of every weight's derived seed. Defaults to the layer's name.
        fingerprints: `{weight name: SHA-256}` of the frozen values, recorded
            by `get_config`; if given, building checks that the values
            regenerate exactly and raises otherwise.
        **kwargs: base layer arguments.

    Raises:
        ValueError: at build, if regenerated values do not match
            `fingerprints` (a different generator or backend).

    Example:

    >>> layer = Frozen(keras.layers.Dense(4), seed=7)
    >>> y = layer(np.ones((2, 3), "float32"))
    >>> layer.set_masks([np.eye(3, 4)])
    >>> layer.summary_fields()
    {'trained': 3, 'frozen': 9}
    """

    def __init__(self, layer, seed, layer_path=None, fingerprints=None, **kwargs):
        super().__init__(layer, **kwargs)
        self.seed = check_seed(seed)
        if layer_path is not None and not isinstance(layer_path, str):
            raise TypeError(f"Argument `layer_path` must be a string or None, received: {layer_path!r}.")
        self.layer_path = layer.name if layer_path is None else layer_path
        if fingerprints is not None and set(fingerprints) != set(self.weight_names):
            raise ValueError(
                f"Argument `fingerprints` must have one entry per weight {list(self.weight_names)}, "
                f"received keys {sorted(fingerprints)}."
            )
        self.fingerprints = None if fingerprints is None else dict(fingerprints)

    def build(self, input_shape=None):
        fresh = not self.layer.built
        super().build(input_shape)
        if fresh:
            for weight, value in zip(self.prunable_weights, self._frozen):
                weight.assign(value)

    def build_parametrization(self, weights):
        # Boolean masks: the select needs no cast in every step.
        self.masks = [
            self.add_weight(
                name=f"{w.name}_mask",
                shape=w.shape,
                initializer="ones",
                dtype="bool",
                trainable=False,
                aggregation="only_first_replica",
            )
            for w in weights
        ]
        # A tuple of constants: attribute tracking leaves it alone.
        self._frozen = tuple(initial_value(self.layer, name, self.seed, self.layer_path) for name in self.weight_names)
        found = {name: fingerprint(v) for name, v in zip(self.weight_names, self._frozen)}
        if self.fingerprints is not None and found != self.fingerprints:
            raise ValueError(
                f"The frozen weights of layer {self.name!r} (seed {self.seed}, path {self.layer_path!r}) "
                f"regenerate differently from when they were saved: the generator "
                f"({GENERATOR} v{GENERATOR_VERSION} with Keras {keras.__version__}) or the "
                f"initializer differs. Load with the library versions that saved them."
            )
        self.fingerprints = found

    def effective_weight(self, index, weight, training):
        return select(self.masks[index], weight, self._frozen[index])

    def frozen_weights(self):
        """Returns `{weight name: frozen values}` (constants regenerated from the seed)."""
        return dict(zip(self.weight_names, self._frozen))

    def set_masks(self, masks):
        """Sets which entries train: a list of 0/1 arrays, one per prunable weight.

        Raises:
            ValueError: for a wrong number of masks, a wrong shape, or values
                other than 0 and 1.
        """
        self.assign_masks(masks)

    def summary_fields(self):
        trained = sum(int(np.sum(keras.ops.convert_to_numpy(m))) for m in self.masks)
        total = sum(int(np.prod(m.shape)) for m in self.masks)
        return {"trained": trained, "frozen": total - trained}

    @classmethod
    def summary_ratios(cls):
        """`{"compression": ...}`: all parameters over those trained and stored (FreezeNet's factor)."""
        return {"compression": _compression}

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed, layer_path=self.layer_path, fingerprints=self.fingerprints)
        return config
