"""Magnitude pruning with TFMOT's API, for Keras 3 models."""

import warnings

import keras

from tfsparse import schedules
from tfsparse.layers.masked import Masked, new_group_name
from tfsparse.registry import is_prunable, prunable_layer_types
from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.walk import leaf_layers

# Layers with weights that are deliberately never pruned (as in TFMOT).
NEVER_PRUNED = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    sparsity_m_by_n=None,
    scope="layer",
    skip_unsupported=False,
):
    """Wraps a model's (or one layer's) prunable weights for magnitude pruning.

    The Keras 3 counterpart of `tfmot.sparsity.keras.prune_low_magnitude`,
    with the same argument names. During `model.fit` (or any call with
    `training=True`), each wrapped layer recomputes its mask at the
    schedule's steps, keeping the largest-magnitude weights. Sparsity is
    exact: `round(s * n)` weights pruned, whatever the ties, except that at
    least one weight of every pruned tensor is kept, as in TFMOT. Steps
    follow TFMOT too: the k-th training batch is step k (from 1).

    Args:
        to_prune: a built Sequential or functional model (nested models
            included), a subclassed model (changed in place), or a single
            layer (for use inside a model definition).
        pruning_schedule: a `tfsparse.schedules` or TFMOT schedule; defaults
            to `ConstantSparsity(0.5, begin_step=0)` as in TFMOT.
        block_size: `(rows, cols)` blocks pruned together (rank-2 weights).
        block_pooling_type: `"AVG"` or `"MAX"`.
        sparsity_m_by_n: `None` or `(m, n)`, e.g. `(2, 4)`.
        scope: `"layer"` (TFMOT's rule: every weight pruned to the target) or
            `"global"`: one magnitude threshold across all wrapped weights,
            so sensitive layers keep more.
        skip_unsupported: if True, layers with weights that cannot be pruned
            are left as they are, with a warning naming them; if False they
            raise a `TypeError`.

    Returns:
        The wrapped model, uncompiled (a new one, except for subclassed
        models), or a `tfsparse.layers.Masked` layer. Pruned layers are
        copies; the layers that need no change are the same layer objects
        in both models, as in TFMOT (so a custom layer without a complete
        `get_config` is kept).

    Raises:
        TypeError: for an unsupported layer (unless `skip_unsupported`).
        ValueError: for bad arguments or an unbuilt model.

    Example:

    >>> schedule = tfsparse.schedules.PolynomialDecay(0.0, 0.9, 0, end_step=14, frequency=2)
    >>> pruned = tfsparse.prune_low_magnitude(model, schedule)
    >>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = pruned.fit(x, y, epochs=2, verbose=0)  # no callback needed
    >>> plain = tfsparse.strip_pruning(pruned)
    >>> int(np.sum(plain.get_layer("conv2").kernel.numpy() == 0))  # round(0.9 * 4,608)
    4147
    """
    if pruning_schedule is None:
        pruning_schedule = schedules.ConstantSparsity(0.5, begin_step=0)
    params = dict(
        pruning_schedule=schedules.get(pruning_schedule),
        block_size=block_size,
        block_pooling_type=block_pooling_type,
        sparsity_m_by_n=sparsity_m_by_n,
        scope=scope,
    )
    if not isinstance(to_prune, keras.layers.Layer):
        raise TypeError(
            f"Argument `to_prune` must be a keras.Model or keras.layers.Layer, "
            f"received: {to_prune!r} (of type {type(to_prune).__name__})."
        )
    if not isinstance(to_prune, keras.Model):
        if scope == "global":
            raise ValueError(
                "Argument `scope='global'` needs a whole model (one threshold across "
                f"layers), received the single layer {to_prune.name!r}."
            )
        return Masked(to_prune, **params)

    prunable = [layer for layer in leaf_layers(to_prune) if is_prunable(layer)]
    _check_unsupported(to_prune, skip_unsupported)
    if not prunable:
        raise ValueError(
            f"Argument `to_prune` ({to_prune.name!r}) has no prunable layer. "
            f"Supported layer types: {', '.join(prunable_layer_types())}."
        )
    group = {"name": new_group_name(), "size": len(prunable)} if scope == "global" else None
    order = {id(layer): i for i, layer in enumerate(prunable)}

    def wrap(layer):
        if id(layer) not in order:
            return layer
        member = None if group is None else {**group, "index": order[id(layer)]}
        return Masked(copy_layer(layer), group=member, **params)

    return transform_layers(to_prune, wrap)


def _check_unsupported(model, skip_unsupported):
    unsupported = [
        f"{layer.name} ({type(layer).__name__})"
        for layer in leaf_layers(model)
        if layer.weights and not is_prunable(layer) and not isinstance(layer, NEVER_PRUNED)
    ]
    if not unsupported:
        return
    message = (
        f"These layers have weights that tfsparse cannot prune: {', '.join(unsupported)}. "
        f"Supported layer types: {', '.join(prunable_layer_types())}."
    )
    if not skip_unsupported:
        raise TypeError(message + " Pass `skip_unsupported=True` to leave them dense.")
    warnings.warn(message + " They are left dense.", stacklevel=3)
