"""`Masked`: a layer whose prunable weights are multiplied by a 0/1 mask."""

import itertools

import keras
import tensorflow as tf

from tfsparse import schedules
from tfsparse.layers.wrapper import ParametrizedWrapper
from tfsparse.scoring import magnitude

SCOPES = ("layer", "global")
POOLING_TYPES = ("AVG", "MAX")


class _Group:
    """The `Masked` layers that share one global magnitude threshold.

    A plain object, so that Keras does not track the members as sublayers.
    """

    def __init__(self, size):
        self.members = [None] * size


class _Groups:
    """Links the members of global-scope groups as they are created.

    Members are created (by `prune_low_magnitude`, by `load_model`, by
    `clone_model`) one after another with their index in the group; a member
    whose index is already taken in the latest group of that name starts a
    new group, so every load or clone of a model gets a group of its own.
    """

    def __init__(self):
        self._latest = {}

    def join(self, layer, name, index, size):
        group = self._latest.get(name)
        if group is None or len(group.members) != size or group.members[index] is not None:
            group = _Group(size)
            self._latest[name] = group
        group.members[index] = layer
        return group


_GROUPS = _Groups()
_GROUP_IDS = itertools.count()


def new_group_name():
    """Returns a fresh name for a global-scope group."""
    return f"global_{next(_GROUP_IDS)}_{id(_GROUP_IDS):x}"


@keras.saving.register_keras_serializable(package="tfsparse")
class Masked(ParametrizedWrapper):
    """Multiplies each prunable weight of a layer by a non-trainable mask.

    The mask is applied in `call` (`kernel * mask`); the stored kernel is
    never overwritten, so masked entries of the *effective* kernel are exactly
    zero whatever the optimizer does (momentum, Adam, decoupled weight decay).
    Given a `pruning_schedule`, the mask is recomputed from weight magnitudes
    inside the training step at the schedule's frequency: a step counter
    (`pruning_step`) advances on every call with `training=True`, so
    `model.fit` and custom training loops need no callback.

    Args:
        layer: the layer to wrap: Dense, EinsumDense, Conv1D/2D/3D and their
            Transpose variants, DepthwiseConv1D/2D, SeparableConv1D/2D (both
            kernels are masked) or Embedding.
        pruning_schedule: a tfsparse or TFMOT schedule; `None` keeps the
            mask fixed (set it with `set_masks`).
        block_size: `(rows, cols)` blocks pruned together (rank-2 weights
            only); `(1, 1)` prunes single weights.
        block_pooling_type: `"AVG"` or `"MAX"`, how a block is scored.
        sparsity_m_by_n: `None` or `(m, n)`: `m` zeros in every `n`
            consecutive weights along the input-channel axis (e.g. 2:4). The
            schedule then only decides *when* the mask is computed.
        scope: `"layer"` (each weight pruned to the schedule's sparsity) or
            `"global"` (one magnitude threshold across every layer of the
            group, set up by `tfsparse.prune_low_magnitude`).
        **kwargs: base layer arguments.

    Example:

    >>> layer = Masked(keras.layers.Dense(4))
    >>> y = layer(np.ones((2, 3), "float32"))
    >>> layer.set_masks([np.eye(3, 4)])
    >>> int(ops.count_nonzero(layer.effective_weights()["kernel"]))
    3
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        block_size=(1, 1),
        block_pooling_type="AVG",
        sparsity_m_by_n=None,
        scope="layer",
        group=None,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        self.pruning_schedule = None if pruning_schedule is None else schedules.get(pruning_schedule)
        self.block_size = _check_pair(block_size, "block_size", minimum=1)
        if block_pooling_type not in POOLING_TYPES:
            raise ValueError(
                f"Argument `block_pooling_type` must be one of {POOLING_TYPES}, "
                f"received: {block_pooling_type!r}."
            )
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = None if sparsity_m_by_n is None else _check_pair(sparsity_m_by_n, "sparsity_m_by_n", minimum=1)
        if self.sparsity_m_by_n is not None and self.sparsity_m_by_n[0] >= self.sparsity_m_by_n[1]:
            raise ValueError(
                f"Argument `sparsity_m_by_n` must be (m, n) with m < n, received: {sparsity_m_by_n!r}."
            )
        if scope not in SCOPES:
            raise ValueError(f"Argument `scope` must be one of {SCOPES}, received: {scope!r}.")
        if scope == "global" and (self.block_size != (1, 1) or self.sparsity_m_by_n):
            raise ValueError(
                "Argument `scope='global'` cannot be combined with `block_size` or "
                "`sparsity_m_by_n`; they prune within a layer."
            )
        self.scope = scope
        self.group = group
        self._group = None
        if scope == "global":
            if group is None:
                raise ValueError(
                    "Argument `group` is required with `scope='global'`: use "
                    "`tfsparse.prune_low_magnitude(model, scope='global')`, which sets it."
                )
            self._group = _GROUPS.join(self, group["name"], group["index"], group["size"])

    def build_parametrization(self, weights):
        for w in weights:
            self._check_structure(w)
        self.masks = [
            self.add_weight(
                name=f"{w.name}_mask",
                shape=w.shape,
                initializer="ones",
                dtype=w.dtype,
                trainable=False,
                aggregation="only_first_replica",
            )
            for w in weights
        ]
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            aggregation="only_first_replica",
        )

    def _check_structure(self, weight):
        if self.block_size != (1, 1) and len(weight.shape) != 2:
            raise ValueError(
                f"Argument `block_size` {self.block_size} needs rank-2 weights, but "
                f"layer {self.layer.name!r} has {weight.name} of shape {tuple(weight.shape)}. "
                f"Use block_size=(1, 1) for this layer."
            )
        if self.sparsity_m_by_n and (len(weight.shape) < 2 or isinstance(self.layer, keras.layers.Embedding)):
            raise ValueError(
                f"Argument `sparsity_m_by_n` applies to Dense and convolution kernels; "
                f"layer {self.layer.name!r} ({type(self.layer).__name__}) has {weight.name} "
                f"of shape {tuple(weight.shape)}."
            )

    def effective_weight(self, index, weight, training):
        return weight * self.masks[index]

    def set_masks(self, masks):
        """Sets the masks (a list of 0/1 arrays, one per prunable weight)."""
        if len(masks) != len(self.masks):
            raise ValueError(
                f"Argument `masks` must hold {len(self.masks)} arrays for layer "
                f"{self.name!r}, received {len(masks)}."
            )
        for variable, value in zip(self.masks, masks):
            if tuple(keras.ops.shape(value)) != tuple(variable.shape):
                raise ValueError(
                    f"Argument `masks` for {variable.name!r} of layer {self.name!r} must have "
                    f"shape {tuple(variable.shape)}, received shape {tuple(keras.ops.shape(value))}."
                )
            variable.assign(keras.ops.cast(value, variable.dtype))

    def update_state(self, training):
        if not training or self.pruning_schedule is None:
            return
        if self.scope == "layer" or self.group["index"] == 0:
            # Only the step test runs every step; the target sparsity and the
            # new masks are computed inside the branch, at update steps only.
            step = self.pruning_step.value
            should_prune = self.pruning_schedule.should_prune(step)
            pairs = self._pruned_pairs()
            if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
                # Per-replica call: assignments to mirrored variables are
                # synchronized, which cannot happen inside control flow, so
                # the cond only computes and every step assigns.
                new_masks = tf.cond(
                    should_prune,
                    lambda: self._new_masks(pairs, self.pruning_schedule.sparsity(step)),
                    lambda: [m.value for _, m in pairs],
                )
                for (_, m), new in zip(pairs, new_masks):
                    m.assign(new)
            else:
                tf.cond(should_prune, lambda: self._assign_new_masks(pairs, step), lambda: tf.constant(False))
        self.pruning_step.assign_add(1)

    def _pruned_pairs(self):
        """(weight, mask) pairs this layer updates: its own, or its group's."""
        layers = self._linked_group() if self.scope == "global" else [self]
        return [pair for layer in layers for pair in zip(layer.prunable_weights, layer.masks)]

    def _assign_new_masks(self, pairs, step):
        for (_, m), new in zip(pairs, self._new_masks(pairs, self.pruning_schedule.sparsity(step))):
            m.assign(new)
        return tf.constant(True)

    def _new_masks(self, pairs, sparsity):
        """Masks from `|w * mask|`, so that pruned weights stay pruned."""
        scores = [tf.abs(w.value * m.value) for w, m in pairs]
        if self.scope == "global":
            return magnitude.global_topk_masks(scores, sparsity)
        if self.sparsity_m_by_n:
            return [magnitude.m_by_n_mask(s, self.sparsity_m_by_n) for s in scores]
        if self.block_size != (1, 1):
            return [magnitude.block_mask(s, sparsity, self.block_size, self.block_pooling_type) for s in scores]
        return [magnitude.topk_mask(s, sparsity) for s in scores]

    def _linked_group(self):
        members = self._group.members
        missing = [i for i, layer in enumerate(members) if layer is None or not layer.built]
        if missing:
            raise RuntimeError(
                f"Global-scope layer {self.name!r} belongs to group {self.group['name']!r} of "
                f"{self.group['size']} layers, but members {missing} are missing or unbuilt. "
                f"Build the whole model before training."
            )
        return members

    def get_config(self):
        config = super().get_config()
        config.update(
            pruning_schedule=None
            if self.pruning_schedule is None
            else keras.saving.serialize_keras_object(self.pruning_schedule),
            block_size=self.block_size,
            block_pooling_type=self.block_pooling_type,
            sparsity_m_by_n=self.sparsity_m_by_n,
            scope=self.scope,
            group=self.group,
        )
        return config


def _check_pair(value, name, minimum):
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) < minimum or pair != tuple(value):
        raise ValueError(
            f"Argument `{name}` must be a pair of integers >= {minimum}, received: {value!r}."
        )
    return pair
