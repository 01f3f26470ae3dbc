"""`polarize`: channel and block gates trained with a polarization regularizer, in one pass.

Inspired by Zhi et al., 2023 ("Learning a Consensus Sub-Network with
Polarization Regularization and One Pass Training"): the paper has no
public code; the gates, the estimator and the schedule are those of
`tfsparse.layers.Gated` and `tfsparse.optimizers.Polarization` (see their
docstrings). Whole residual blocks, pruned by the paper's first version,
are gated with `tfsparse.layers.BlockGate` (`blocks=`).
"""

from tfsparse import checks
from tfsparse.layers.gate import UNGATED, BlockGate, Gated
from tfsparse.layers.masked import new_group_name
from tfsparse.optimizers.polarization import Polarization
from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.surgery.graph import CONSUMER, ChannelGraph, checked_model
from tfsparse.surgery.replace import residual_blocks
from tfsparse.walk import check_unwrapped


def polarize(model, sparsity=0.5, steps=None, blocks=0.0, dynamic=False, warmup=0.1, ramp=0.2, freeze=0.6,
             polarization_weight=30.0, sparsity_weight=600.0, consensus_weight=1.0, t=0.5, initial_logit=1.0,
             logit_scale=30.0, add_loss=True):
    """Returns a copy of `model` whose channels pass through trainable binary gates.

    Every layer that reads the channels of a prunable `ChannelGroup` (see
    `tfsparse.surgery.dependency_groups`) is wrapped in
    `tfsparse.layers.Gated`; the model holds one gate per removable group
    channel. Compile and fit the result as usual, for `steps` training
    steps in all: the gates' regularizer (`tfsparse.optimizers.Polarization`)
    is part of the model's losses. Training runs in three stretches, as
    fractions of `steps`: `warmup` without regularization, then the
    regularization (its weights rising over `ramp`) until `freeze`, where
    exactly `round(sparsity * N)` of the `N` gates are closed, those of
    lowest logit (each group keeps at least one channel), and the rest of
    the training adapts the network to them. `tfsparse.strip` then removes
    the closed channels and the gates; the outputs do not change.

    `sparsity` counts channels of the prunable groups, as
    `tfsparse.prune_channels(ratio=..., target="channels")` does. With
    `blocks`, every residual block with an identity shortcut (see
    `tfsparse.surgery.residual_blocks`) also gets a gate on its branches
    (`tfsparse.layers.BlockGate`), and exactly `round(blocks * B)` of the `B`
    blocks close at `freeze`; `strip` removes them whole (their channels
    with them, so more than `sparsity` of the channels go).

    Args:
        model: a built functional or Sequential `keras.Model` without
            tfsparse wrappers.
        sparsity: fraction of the prunable groups' channels to remove, in
            [0, 1).
        steps: the number of training steps (batches) the gated model will
            be trained for.
        blocks: fraction of the residual blocks to remove, in [0, 1); 0 (or
            False) adds no block gate.
        dynamic: whether gates depend on the input during training (a small
            term from pooled features, pulled to a consensus).
        warmup: fraction of `steps` without regularization.
        ramp: fraction of `steps` over which the loss weights rise.
        freeze: fraction of `steps` at which the decisions are fixed, or
            None to let the hard gates follow the logits to the end (the
            sparsity is then what the regularizer reached).
        polarization_weight, sparsity_weight, consensus_weight, t: the
            regularizer's weights and `t` (see `Polarization`).
        initial_logit: the gates' initial logit (all gates start open).
        logit_scale: factor between the stored gate variable and the
            logits: it sets how fast the gates decide. Measured on digits
            (8 epochs): 30 suits Adam at 1e-3 to 3e-3; 10 suits SGD with
            momentum at 0.1 (the `tfsparse.finetune` recipe). Too slow a
            rate leaves gates unpolarized when they are fixed.
        add_loss: whether the gates add the regularizer to the model's
            losses; with False, add its gradient in a custom loop with
            `tfsparse.optimizers.polarization_gradients`.

    Returns:
        A new, uncompiled `keras.Model`; `model` is left unchanged.

    Raises:
        TypeError: if `model` is not a functional or Sequential model.
        ValueError: for a bad argument, a model that already holds tfsparse
            wrappers, a model with no prunable channel group, a sparsity
            that would empty a layer, or `blocks` > 0 on a model without a
            residual block with an identity shortcut.

    Example:

    >>> gated = tfsparse.polarize(model, sparsity=0.5, steps=2, warmup=0.0, ramp=0.0, freeze=0.5)
    >>> _ = gated(x[:64], training=True)  # a training call (a fit step): step 1, the gates are fixed
    >>> small = tfsparse.strip(gated)
    >>> small.get_layer("conv1").filters + small.get_layer("conv2").filters  # 24 of 48 channels left
    24
    >>> bool(np.allclose(small(x), gated(x), atol=1e-5))
    True
    """
    model = checked_model(model)
    check_unwrapped(model)
    sparsity = checks.check_fraction(sparsity, "sparsity")
    steps = checks.check_positive_int(steps, "steps")
    regularizer = Polarization(
        sparsity, polarization_weight, sparsity_weight, consensus_weight, t,
        *_schedule(steps, warmup, ramp, freeze))
    if not isinstance(logit_scale, (int, float)) or isinstance(logit_scale, bool) or logit_scale <= 0:
        raise ValueError(f"Argument `logit_scale` must be a number > 0, received: {logit_scale!r}.")
    if not isinstance(initial_logit, (int, float)) or isinstance(initial_logit, bool) or initial_logit <= 0:
        raise ValueError(
            f"Argument `initial_logit` must be a number > 0 (gates start open), received: {initial_logit!r}.")
    graph = ChannelGraph(model)
    grouped = [(group, roots) for group, roots in graph.grouped if group.prunable]
    if not grouped:
        raise ValueError(f"Argument `model` ({model.name!r}) has no prunable channel group: there is nothing to gate.")
    gate_of, bank = _number_gates(grouped, sparsity)
    bank.update(initial_logit=float(initial_logit), logit_scale=float(logit_scale))
    shortcuts = _gated_blocks(graph.model, blocks)
    if shortcuts:
        bank.update(blocks=list(shortcuts), block_sparsity=float(blocks))
    consumers = _consumer_arguments(graph, grouped, gate_of)
    leader = min(consumers, key=graph.order.get)
    name = new_group_name()

    def wrap(layer):
        if layer.name in shortcuts:
            return BlockGate(copy_layer(layer), gates=name, block=list(shortcuts).index(layer.name),
                             identity=shortcuts[layer.name])
        if layer.name not in consumers:
            return copy_layer(layer)
        extra = dict(bank=bank, regularizer=regularizer, add_loss=add_loss) if layer.name == leader else {}
        return Gated(copy_layer(layer), gates=name, dynamic=dynamic, **consumers[layer.name], **extra)

    return transform_layers(graph.model, wrap)


def _gated_blocks(model, blocks):
    """`{Add name: identity index}` of the blocks to gate: none for `blocks` 0 or False, else every one.

    Raises:
        ValueError: for `blocks` outside [0, 1), or > 0 on a model without a removable block.
    """
    if blocks is False:
        return {}
    blocks = checks.check_fraction(blocks, "blocks")
    if blocks == 0:
        return {}
    found = residual_blocks(model)
    if not found:
        raise ValueError(
            f"Argument `blocks`={blocks} asks for block gates, but model {model.name!r} has no residual block with "
            f"an identity shortcut (an `Add` one of whose inputs all others are computed from)."
        )
    return found


def _schedule(steps, warmup, ramp, freeze):
    """`(warmup_steps, ramp_steps, freeze_step)` from fractions of `steps`."""
    warmup = checks.check_fraction(warmup, "warmup")
    ramp = checks.check_fraction(ramp, "ramp")
    warmup_steps, ramp_steps = round(warmup * steps), round(ramp * steps)
    if freeze is None:
        return warmup_steps, ramp_steps, None
    freeze = checks.check_fraction(freeze, "freeze", include_one=True)
    freeze_step = max(round(freeze * steps), 1)
    if freeze_step <= warmup_steps + ramp_steps:
        raise ValueError(
            f"Argument `freeze` ({freeze}) must come after the warm-up and the ramp ({warmup} + {ramp} of "
            f"{steps} steps)."
        )
    return warmup_steps, ramp_steps, freeze_step


def _number_gates(grouped, sparsity):
    """`({channel root: gate number}, bank)`: one gate per unpinned channel of every prunable group.

    Raises:
        ValueError: if closing `round(sparsity * N)` gates would leave a group without channels.
    """
    gate_of, groups, sizes, channels = {}, [], [], []
    protected = 0
    for group, roots in grouped:
        free = [c for c in range(group.size) if c not in group.pinned]
        for c in free:
            gate_of[int(roots[c])] = len(gate_of)
        groups.append(list(group.producers))
        sizes.append(group.size)
        channels.append(free)
        protected += len(free) == group.size
    closed = round(sparsity * len(gate_of))
    if closed > len(gate_of) - protected:
        raise ValueError(
            f"Argument `sparsity`={sparsity} closes {closed} of {len(gate_of)} channels, but every layer keeps at "
            f"least one: at most {len(gate_of) - protected} can be closed."
        )
    return gate_of, {"groups": groups, "sizes": sizes, "channels": channels}


def _consumer_arguments(graph, grouped, gate_of):
    """`{consumer name: {"slices", "inputs_index"}}` for every layer that reads a gated channel."""
    kernels = {}
    for group, roots in grouped:
        for weight_slice in group.slices:
            if weight_slice.role != CONSUMER:
                continue
            layer = graph.layers[weight_slice.layer].layer
            width = next(w for w in layer.weights if w.name == weight_slice.weight).shape[weight_slice.axis]
            index = kernels.setdefault(weight_slice.layer, {}).setdefault(
                (weight_slice.weight, weight_slice.axis), [UNGATED] * width)
            for c, positions in enumerate(weight_slice.positions):
                for position in positions:
                    index[position] = gate_of.get(int(roots[c]), UNGATED)
    arguments = {}
    for name, slices in kernels.items():
        if all(i == UNGATED for index in slices.values() for i in index):
            continue
        inputs = graph.layers[name].inputs[0][0]
        arguments[name] = {
            "slices": [{"weight": w, "axis": a, "index": index} for (w, a), index in slices.items()],
            "inputs_index": [gate_of.get(int(root), UNGATED) for root in inputs.tolist()],
        }
    return arguments
