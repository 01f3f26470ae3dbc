"""`Masked`: a layer whose prunable weights are multiplied by a 0/1 mask."""

import itertools
import json
import math

import keras
import tensorflow as tf

from tfsparse import keras_internals, schedules
from tfsparse.layers.wrapper import ParametrizedWrapper, apply_mask
from tfsparse.scoring import magnitude
from tfsparse.walk import named_layers

SCOPES = ("layer", "global")
POOLING_TYPES = ("AVG", "MAX")


_GROUP_IDS = itertools.count()
# The call-context entry listing the `Masked` layers already advanced in a call.
_UPDATED = "tfsparse_masked_updated"


def new_group_name():
    """Returns a fresh name for a global-scope group."""
    return f"global_{next(_GROUP_IDS)}_{id(_GROUP_IDS):x}"


@keras.saving.register_keras_serializable(package="tfsparse")
class Masked(ParametrizedWrapper):
    """Multiplies each prunable weight of a layer by a non-trainable 0/1 mask.

    The mask is a boolean variable (one byte per entry; `.keras` files whose
    masks are floats load as well) applied in `call` as
    `kernel * cast(mask)`, one pass over the kernel in the forward pass and
    none in the backward pass: the gradient reaches the stored kernel
    straight through (see `apply_mask`), as in TFMOT, where the layer reads
    the stored kernel.
    The wrapper never overwrites the stored kernel, so masked entries of
    the *effective* kernel are zero whatever the optimizer does to the
    stored entries behind them (momentum, Adam, decoupled weight decay);
    those still train, multiplied by zero, and never come back: masks are
    recomputed from `|kernel|` where the mask is set (0 elsewhere), so
    pruned weights stay pruned. (Gradient norms, e.g. for `clipnorm`,
    include their gradients, as in TFMOT.)
    Given a `pruning_schedule`, the mask is recomputed from weight magnitudes
    inside the training step at the schedule's frequency: a step counter
    (`pruning_step`) advances on every call with `training=True`, so
    `model.fit` and custom training loops need no callback. Steps are
    TFMOT's: the k-th training call is step k (from 1), it first advances
    the counter and then updates the mask if the schedule prunes at step k,
    and `pruning_step` holds the number of training calls so far. So
    `begin_step=end_step=N` prunes once, at the N-th batch, and
    `begin_step=0` first prunes at step `frequency`. Within a model, the
    layers with equal schedules and mask structure count together: the
    first of them that runs in a training call reads its counter once,
    sets every one's, tests the schedule and updates all their masks in
    one conditional, so a model pays the schedule once per step, not once
    per layer (a training call of the model is one step for each of them,
    even for a layer it calls twice).

    Each update prunes exactly `round(s * n)` of a weight's `n` entries,
    ties broken by position, but always keeps at least one, as TFMOT does:
    a 40-weight kernel at sparsity 0.99 keeps 1. With `block_size`, whole
    blocks are pruned, lowest scores first, until the pruned entries are
    closest to `round(s * n)` (within half a block; at least one block is
    kept; see `tfsparse.scoring.block_mask`).
    With `scope="global"` every member keeps at least one entry, and the
    rest are pruned on one threshold. The first member of the group that
    runs in a training call computes the masks of the whole group (found in
    the model being called, see `group_members`) before any member uses
    them, whatever the order in which the members run.

    Args:
        layer: the layer to wrap: Dense, EinsumDense, Conv1D/2D/3D and their
            Transpose variants, DepthwiseConv1D/2D, SeparableConv1D/2D (both
            kernels are masked) or Embedding.
        pruning_schedule: a tfsparse or TFMOT schedule; `None` keeps the
            mask fixed (set it with `set_masks`).
        block_size: `(rows, cols)` blocks pruned together (rank-2 weights
            only; edge blocks may be partial and are scored by their real
            entries); `(1, 1)` prunes single weights.
        block_pooling_type: `"AVG"` or `"MAX"`, how a block is scored.
        sparsity_m_by_n: `None` or `(m, n)`: `m` zeros in every `n`
            consecutive weights along the input-channel axis (e.g. 2:4). The
            schedule then only decides *when* the mask is computed.
        scope: `"layer"` (each weight pruned to the schedule's sparsity) or
            `"global"` (one magnitude threshold across every layer of the
            group, set up by `tfsparse.prune_low_magnitude`).
        group: with `scope="global"`, `{"name", "index", "size"}`: the
            group this layer belongs to and its place in it.
        **kwargs: base layer arguments.

    Raises:
        ValueError: for bad arguments, or a schedule that updates the masks
            at no training step (e.g. `begin_step=0, end_step=0`).
        RuntimeError: at a training call with `scope="global"`, if the model
            being called lacks built members of the group or holds one twice.

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
        self.pruning_schedule = None if pruning_schedule is None else _check_fires(schedules.get(pruning_schedule))
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
        if scope == "global" and group is None:
            raise ValueError(
                "Argument `group` is required with `scope='global'`: use "
                "`tfsparse.prune_low_magnitude(model, scope='global')`, which sets it."
            )
        self.scope = scope
        self.group = group

    def build_parametrization(self, weights):
        for w in weights:
            self._check_structure(w)
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
        return apply_mask(self.masks[index], weight)

    def set_masks(self, masks):
        """Sets the masks: a list of 0/1 arrays, one per prunable weight.

        Raises:
            ValueError: before the layer is built, or for a wrong number of
                masks, a wrong shape, or values other than 0 and 1.
        """
        self.assign_masks(masks)

    def update_state(self, training):
        if not training or self.pruning_schedule is None:
            return
        members = self._members_to_update()
        if not members:
            return
        # The k-th training call is step k (counting from 1), as in TFMOT.
        # One read of the counter for all members: they count together.
        step = self.pruning_step + tf.constant(1, tf.int64)
        for layer in members:
            layer.pruning_step.assign(step)
        pairs = [pair for layer in members for pair in zip(layer.prunable_weights, layer.masks)]
        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            # Per-replica call: assignments to mirrored variables are
            # synchronized, which cannot happen inside control flow, so
            # the cond only computes and every step assigns.
            new_masks = tf.cond(
                self._should_prune(step), lambda: self._new_masks(pairs, step), lambda: [m.value for _, m in pairs]
            )
            for (_, m), new in zip(pairs, new_masks):
                m.assign(new)
        else:
            tf.cond(self._should_prune(step), lambda: self._assign_new_masks(pairs, step), lambda: tf.constant(False))

    def _should_prune(self, step):
        """Is `step` a mask-update step? The one schedule test of a training call.

        A tfsparse schedule answers with `should_prune` alone, so that its
        sparsity is computed inside the update branch, at update steps only;
        other schedules are called as TFMOT calls them (`schedule(step)`).
        """
        if _own_call(self.pruning_schedule):
            return self.pruning_schedule.should_prune(step)
        return tf.cast(self.pruning_schedule(step)[0], tf.bool)

    def _sparsity(self, step):
        """The schedule's sparsity at `step`."""
        if _own_call(self.pruning_schedule):
            return self.pruning_schedule.sparsity(step)
        return self.pruning_schedule(step)[1]

    def _members_to_update(self):
        """The layers whose step counters and masks this call advances (global scope: in group order).

        The first member that runs in an outermost call (a trace of the
        training step, an eager step, one replica's step) advances them all,
        so that a model tests its schedule once per step and every member
        computes with the new masks; the others get none and read the masks
        the first one assigned. With `scope="global"` the members are the
        group; with `scope="layer"`, every built layer of the model being
        called with the same schedule and mask structure (see
        `_update_key`), or this layer alone outside a model call.
        """
        context = keras_internals.call_context()
        # The layers advanced in this call, kept on the call context: each
        # replica of a distribution strategy calls the model in its own.
        updated = set() if context is None else context.get_value(_UPDATED, set())
        if id(self) in updated:
            return []
        if self.scope == "global":
            members = group_members(self.group, self if context is None else context.entry_layer)
        elif context is None:
            members = [self]
        else:
            key = self._update_key()
            found = {id(layer): layer for _, layer in named_layers(context.entry_layer)
                     if isinstance(layer, Masked) and layer is not self and layer.built
                     and layer.pruning_schedule is not None and layer._update_key() == key}
            members = [self, *found.values()]
        if context is not None:
            context.set_value(_UPDATED, updated | {id(member) for member in members})
        return members

    def _update_key(self):
        """What layer-scope layers that count and update together share: schedule and mask structure."""
        schedule = self.pruning_schedule
        if hasattr(schedule, "get_config"):
            schedule = type(schedule), json.dumps(schedule.get_config(), sort_keys=True, default=str)
        return self.scope, schedule, self.block_size, self.block_pooling_type, self.sparsity_m_by_n

    def _assign_new_masks(self, pairs, step):
        for (_, m), new in zip(pairs, self._new_masks(pairs, step)):
            m.assign(new)
        return tf.constant(True)

    def _new_masks(self, pairs, step):
        """Boolean masks from `|w|` where the mask is set, 0 elsewhere, so that pruned weights stay pruned.

        Every weight keeps at least one entry (one block), as in TFMOT.
        """
        scores = [tf.where(m.value, tf.abs(w.value), tf.constant(0, w.dtype)) for w, m in pairs]
        return self._magnitude_masks(scores, step)

    def _magnitude_masks(self, scores, step):
        """The boolean masks of `scores` at `step`, by the layer's structure and scope."""
        if self.sparsity_m_by_n:
            return [magnitude.m_by_n_mask(s, self.sparsity_m_by_n, dtype=tf.bool) for s in scores]
        sparsity = self._sparsity(step)
        if self.scope == "global":
            return magnitude.global_topk_masks(scores, sparsity, min_kept=1, dtype=tf.bool)
        if self.block_size != (1, 1):
            return [
                magnitude.block_mask(
                    s, magnitude.capped_sparsity(sparsity, self._num_blocks(s.shape)), self.block_size,
                    self.block_pooling_type, dtype=tf.bool,
                )
                for s in scores
            ]
        return [magnitude.topk_mask(s, sparsity, min_kept=1, dtype=tf.bool) for s in scores]

    def _num_blocks(self, shape):
        """How many blocks `block_mask` scores in a rank-2 weight (edges padded)."""
        (rows, cols), (br, bc) = shape, self.block_size
        return math.ceil(rows / br) * math.ceil(cols / bc)

    def target_sparsity(self):
        """The schedule's sparsity at the current pruning step (`m / n` for m-by-n), or None without a schedule."""
        if self.pruning_schedule is None:
            return None
        if self.sparsity_m_by_n:
            m, n = self.sparsity_m_by_n
            return m / n
        return float(self.pruning_schedule(self.pruning_step)[1])

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


def group_members(group, entry_layer):
    """Returns the members of a global-scope group found in `entry_layer`, by index.

    A group lives in one model: the `Masked` layers under `entry_layer` (the
    model being called) whose `group["name"]` is the group's. A loaded or
    cloned copy of a model is therefore a group of its own. Ordering by
    index makes the joint top-k independent of the order in which members
    run.

    Args:
        group: a member's `group` dict (`name`, `index`, `size`).
        entry_layer: the layer (usually the model) to search.

    Returns:
        The list of `group["size"]` built `Masked` layers, in index order.

    Raises:
        RuntimeError: if an index appears more than once, or members are
            missing or unbuilt.

    Example:

    >>> schedule = tfsparse.schedules.ConstantSparsity(0.9, begin_step=1)
    >>> pruned = tfsparse.prune_low_magnitude(model, schedule, scope="global")
    >>> member = next(l for l in pruned.layers if isinstance(l, Masked))
    >>> [m.group["index"] for m in group_members(member.group, pruned)]
    [0, 1, 2, 3]
    """
    found = {}
    for _, layer in named_layers(entry_layer):
        if isinstance(layer, Masked) and layer.group and layer.group["name"] == group["name"]:
            found.setdefault(layer.group["index"], []).append(layer)
    twice = sorted(index for index, layers in found.items() if len(layers) > 1)
    if twice:
        raise RuntimeError(
            f"Global-scope group {group['name']!r}: indices {twice} appear more than once in "
            f"{entry_layer.name!r}. A model can hold one copy of a group: prune each copy with "
            f"its own `tfsparse.prune_low_magnitude(..., scope='global')` call, which names a new group."
        )
    missing = [i for i in range(group["size"]) if i not in found]
    unbuilt = [i for i, (layer,) in sorted(found.items()) if not layer.built]
    if missing or unbuilt:
        raise RuntimeError(
            f"Global-scope group {group['name']!r} of {group['size']} layers is incomplete in "
            f"{entry_layer.name!r}: missing: {missing}, unbuilt: {unbuilt}. All members must "
            f"be part of the model being trained, and built, before training."
        )
    return [found[i][0] for i in range(group["size"])]


def _own_call(schedule):
    """Is `schedule` a tfsparse schedule called as `(should_prune(step), sparsity(step))`?"""
    return isinstance(schedule, schedules.PruningSchedule) and type(schedule).__call__ is schedules.PruningSchedule.__call__


def _check_fires(schedule):
    """Returns `schedule`, or raises if it never updates masks in training.

    Training steps count from 1, so a schedule that updates only at step 0
    (`begin_step=0, end_step=0`), or ends before its first update, would
    leave the model dense: TFMOT accepts it silently. A schedule that
    overrides `__call__` decides its steps itself and is not checked.
    """
    if not _own_call(schedule):
        return schedule
    first = schedule.begin_step if schedule.begin_step >= 1 else schedule.frequency
    if 0 <= schedule.end_step < first:
        raise ValueError(
            f"Argument `pruning_schedule` never updates the masks: training steps count from 1 "
            f"(the k-th training batch is step k, as in TFMOT), and {schedule!r} updates them "
            f"at no step in 1..{schedule.end_step}. To prune once at the first batch, use "
            f"`begin_step=1, end_step=1`."
        )
    return schedule


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
