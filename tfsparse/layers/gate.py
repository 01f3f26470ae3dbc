"""`Gated`: a layer that reads channels through binary, trainable channel gates.

Design (inspired by Zhi et al., 2023, "Learning a Consensus Sub-Network with
Polarization Regularization and One Pass Training"; the paper has no public
code, so the gate, estimator and schedule are the ones chosen here):

- **Where a gate acts.** A closed channel must change nothing but what its
  removal changes. Gating a producer's kernel does not close a channel that a
  BatchNormalization follows (its `beta` brings it back), and a DepthwiseConv
  or BatchNormalization after the gate would add a constant. So the gates act
  on the *consumers*: every layer that sums over the channels (Conv, Dense,
  the pointwise part of SeparableConv) is wrapped, and the input slice of its
  kernel that reads a gated channel is multiplied by the gate. A closed
  channel is then read by nobody, exactly as after `remove_channels`, and
  `tfsparse.strip` removes it with the surgery engine without changing the
  outputs. The exception is a member that mixes channels (LayerNormalization
  over the channel axis): it still sees a closed channel.
- **One gate per group channel.** The gate vector is one trainable variable of
  `N` logits: one per removable channel of every prunable `ChannelGroup`. It
  lives in one wrapper of the model, the *leader*; every other `Gated` layer
  of the same gate set finds the leader in the model being called (as
  `Masked` finds its global-scope group) and gathers its entries. A residual
  stream, a concatenation or a depthwise layer therefore sees one decision
  per channel wherever the channel is read.
- **Hard forward, straight-through backward.** The gate is `1[p > 0.5]`, with
  `p = sigmoid(logit)`; its gradient reaches `p` unchanged
  (`hard + p - stop_gradient(p)`), so training already computes what the
  stripped network computes.
- **Dynamic gates** (`dynamic=True`): during training a consumer gates its
  *input* per example with `sigmoid(logit + a * z)`, where `z` is the
  consumer's globally pooled input, standardized over the batch, and `a` a
  trainable scale per input position (zero at first). `z` has zero batch mean,
  so the static logit is the gate's mean decision, which inference and strip
  use; the consensus term of the regularizer (the variance of each gate across
  the batch) pulls the per-example decisions together.
- **Schedule and exact sparsity.** The leader counts training steps. At the
  regularizer's `freeze_step` it ranks the logits over the whole model and
  closes exactly `round(sparsity * N)` channels, the lowest first (every group
  keeps its highest-ranked channel); from then on these decisions are fixed
  (a non-trainable `decisions` variable) and the network trains on. Before,
  the hard gates follow the logits.
- **Block gates** (`tfsparse.polarize(..., blocks=f)`): a residual block
  whose `Add` has an identity shortcut gets one more gate, on the leader too,
  which multiplies the block's other `Add` inputs (`BlockGate`). A closed
  block computes its identity, exactly what `tfsparse.surgery.remove_blocks`
  leaves; at `freeze_step` exactly `round(f * B)` of the `B` block gates
  close, lowest logits first, with the same regularizer (its sparsity `f`).
  Block gates are static (no input-dependent term).
- **Loss.** The leader adds its regularizer's value on the logits to the
  layer losses (`add_loss`), so a plain `compile`/`fit` minimizes it; with
  `add_loss=False` a custom loop adds its gradient instead
  (`tfsparse.optimizers.polarization_gradients`).
"""

import weakref

import keras
import tensorflow as tf

from tfsparse import keras_internals
from tfsparse.layers.wrapper import LayerWrapper, ParametrizedWrapper
from tfsparse.walk import named_layers

UNGATED = -1
_EPSILON = 1e-3


class GateSetMember:
    """What every layer of a gate set shares: finding the set's leader.

    A subclass sets `self.gates` (the set's name) and `self._leader_ref = None`.
    """

    def leader(self):
        """The leader of this layer's gate set, found in the model being called (or linked last).

        Raises:
            RuntimeError: if the model holds no leader (or two) for the set.
        """
        context = keras_internals.call_context()
        if context is not None:
            leader = _find_leader(self.gates, context.entry_layer, self)
            self._leader_ref = weakref.ref(leader)
            return leader
        leader = None if self._leader_ref is None else self._leader_ref()
        if leader is None:
            leader = _find_leader(self.gates, self, self)
        return leader

    def link(self, leader):
        """Remembers `leader` for calls outside a model call (e.g. `effective_weights`)."""
        self._leader_ref = weakref.ref(leader)


@keras.saving.register_keras_serializable(package="tfsparse")
class Gated(GateSetMember, ParametrizedWrapper):
    """Multiplies the input slices of a layer's kernels by binary channel gates.

    Built by `tfsparse.polarize`, which also sets the arguments below from
    the model's channel groups; the layer is rarely made by hand. See the
    module docstring for the design.

    Args:
        layer: the consumer layer to wrap (Conv, Dense, SeparableConv, ...).
        gates: name of the gate set: the `Gated` layers of a model with the
            same name share one leader.
        slices: list of `{"weight", "axis", "index"}`: a prunable weight of
            `layer`, its input axis, and for every position along that axis
            the gate it is multiplied by (`-1`: none).
        inputs_index: for every channel of the layer's input, its gate (`-1`:
            none); used by dynamic gates.
        bank: `None`, or on the leader `{"groups", "sizes", "channels",
            "initial_logit", "logit_scale"}` and optionally `"blocks"` and
            `"block_sparsity"`: the producers and size of each gated
            `ChannelGroup`, the group channels it gates (their order is the
            order of the logits), the logits' initial value, the factor
            between the stored variable and the logits (a learning-rate
            multiplier for the gates), the `Add` layers of the gated
            residual blocks (the order of the block logits) and the
            fraction of them to close.
        regularizer: on the leader, the loss on the logits and its schedule,
            a `tfsparse.optimizers.Polarization` (any object with its
            methods).
        add_loss: on the leader, whether the regularizer is added to the
            layer losses.
        dynamic: whether the gates depend on the input during training.
        **kwargs: base layer arguments.

    Raises:
        ValueError: for a slice of a weight that is not prunable, or a
            leader without a regularizer.

    Example:

    >>> gated = tfsparse.polarize(model, sparsity=0.5, steps=10)
    >>> sorted(layer.name for layer in gated.layers if isinstance(layer, Gated))
    ['gated_conv2', 'gated_conv3', 'gated_logits']
    """

    def __init__(self, layer, gates, slices, inputs_index, bank=None, regularizer=None, add_loss=True,
                 dynamic=False, **kwargs):
        super().__init__(layer, **kwargs)
        unknown = [s["weight"] for s in slices if s["weight"] not in self.weight_names]
        if unknown:
            raise ValueError(
                f"Argument `slices` names weights {unknown} of {layer.name!r}, which are not among its prunable "
                f"weights {list(self.weight_names)}."
            )
        if bank is not None and regularizer is None:
            raise ValueError("Argument `regularizer` is required on the leader (the layer given a `bank`).")
        self.gates = gates
        self.slices = [{"weight": s["weight"], "axis": int(s["axis"]), "index": [int(i) for i in s["index"]]}
                       for s in slices]
        self.inputs_index = [int(i) for i in inputs_index]
        self.bank = bank
        self.regularizer = keras.saving.deserialize_keras_object(regularizer) if isinstance(regularizer, dict) \
            else regularizer
        self.add_regularizer_loss = bool(add_loss)
        self.dynamic = bool(dynamic)
        self.block_regularizer = None
        if self.has_blocks:
            self.block_regularizer = type(self.regularizer).from_config(
                {**self.regularizer.get_config(), "sparsity": self.bank["block_sparsity"]})
        self._leader_ref = None
        self._advanced_in = None

    @property
    def is_leader(self):
        """Whether this layer holds the gate set's logits."""
        return self.bank is not None

    @property
    def has_blocks(self):
        """Whether this layer is a leader that also holds block gates."""
        return self.is_leader and bool(self.bank.get("blocks"))

    @property
    def num_gates(self):
        """Number of gates of the set (leader only)."""
        return sum(len(c) for c in self.bank["channels"])

    def build_parametrization(self, weights):
        if self.dynamic:
            self.dynamic_scale = self.add_weight(
                name="dynamic_scale", shape=(len(self.inputs_index),), initializer="zeros", dtype=weights[0].dtype)
            self.agreement = self.add_weight(
                name="agreement", shape=(), initializer="ones", dtype=weights[0].dtype, trainable=False,
                aggregation="only_first_replica")
        if not self.is_leader:
            return
        scale = float(self.bank["logit_scale"])
        self.gate_logits = self.add_weight(
            name="gate_logits", shape=(self.num_gates,),
            initializer=keras.initializers.Constant(float(self.bank["initial_logit"]) / scale),
            dtype=weights[0].dtype)
        self.decisions = self.add_weight(
            name="decisions", shape=(self.num_gates,), initializer="ones", dtype=weights[0].dtype, trainable=False,
            aggregation="only_first_replica")
        self.step = self.add_weight(
            name="step", shape=(), initializer="zeros", dtype="int64", trainable=False,
            aggregation="only_first_replica")
        if self.has_blocks:
            blocks = len(self.bank["blocks"])
            self.block_logits = self.add_weight(
                name="block_logits", shape=(blocks,),
                initializer=keras.initializers.Constant(float(self.bank["initial_logit"]) / scale),
                dtype=weights[0].dtype)
            self.block_decisions = self.add_weight(
                name="block_decisions", shape=(blocks,), initializer="ones", dtype=weights[0].dtype,
                trainable=False, aggregation="only_first_replica")

    # The leader's state.
    def logits(self):
        """The gate logits (leader only): the stored variable times `logit_scale`."""
        return self.gate_logits * float(self.bank["logit_scale"])

    def probabilities(self):
        """`sigmoid(logits)`, one per gate (leader only), as a tensor."""
        return keras.ops.sigmoid(self.logits())

    def frozen(self):
        """Whether the decisions are fixed: the step has reached the regularizer's `freeze_step`."""
        freeze = self.regularizer.freeze_step
        if freeze is None:
            return tf.constant(False)
        return self.step >= freeze

    def open_gates(self, training=False):
        """The gate vector: 0/1 values, with a straight-through gradient in training (leader only)."""
        return self._gate_values(self.logits(), self.decisions, training)

    def scaled_block_logits(self):
        """The block gate logits (leader with blocks only): the stored variable times `logit_scale`."""
        return self.block_logits * float(self.bank["logit_scale"])

    def open_blocks(self, training=False):
        """The block gates: 0/1 values in `bank["blocks"]` order, straight-through in training."""
        return self._gate_values(self.scaled_block_logits(), self.block_decisions, training)

    def _gate_values(self, logits, decisions, training):
        """`1[logits > 0]` (straight-through to the sigmoid in training), or `decisions` once frozen."""
        hard = keras.ops.cast(logits > 0, logits.dtype)
        if training:
            p = keras.ops.sigmoid(logits)
            hard = hard + (p - keras.ops.stop_gradient(p))
        return keras.ops.where(self.frozen(), decisions, hard)

    def regularization_loss(self):
        """The regularizer's value on every logit of the set at the current step (leader only)."""
        loss = self.regularizer(self.logits(), self.step)
        if self.has_blocks:
            loss = loss + self.block_regularizer(self.scaled_block_logits(), self.step)
        return loss

    def closed_blocks(self):
        """Names of the `Add` layers whose block gate is closed at inference (leader only)."""
        if not self.has_blocks:
            return []
        shut = keras.ops.convert_to_numpy(self.open_blocks()) == 0
        return [name for name, closed in zip(self.bank["blocks"], shut) if closed]

    def closed_channels(self):
        """`{group producers: closed group channels}` at inference (leader only)."""
        closed = keras.ops.convert_to_numpy(self.open_gates()) == 0
        result, start = {}, 0
        for producers, channels in zip(self.bank["groups"], self.bank["channels"]):
            result[tuple(producers)] = [c for c, shut in zip(channels, closed[start:start + len(channels)]) if shut]
            start += len(channels)
        return result

    def project(self):
        """Decisions with exactly `round(sparsity * N)` gates closed, lowest logits first (leader only).

        The highest logit of every group without pinned channels is never
        closed, so that no layer loses all its channels.
        """
        logits = self.logits()
        closed = round(self.regularizer.sparsity * self.num_gates)
        if closed == 0:
            return keras.ops.ones_like(logits)
        best, start = [], 0
        for channels, size in zip(self.bank["channels"], self.bank["sizes"]):
            if len(channels) == size:  # no pinned channel keeps the layer
                best.append(start + keras.ops.argmax(logits[start:start + len(channels)]))
            start += len(channels)
        ranked = logits
        if best:
            best = keras.ops.cast(keras.ops.stack(best), "int32")
            ranked = tf.tensor_scatter_nd_update(logits, best[:, None], tf.fill(tf.shape(best), float("inf")))
        _, lowest = tf.math.top_k(-ranked, k=closed)
        return tf.tensor_scatter_nd_update(
            tf.ones_like(logits), lowest[:, None], tf.zeros((closed,), logits.dtype))

    def project_blocks(self):
        """Block decisions with exactly `round(block_sparsity * B)` closed, lowest logits first."""
        logits = self.scaled_block_logits()
        closed = round(self.block_regularizer.sparsity * len(self.bank["blocks"]))
        if closed == 0:
            return keras.ops.ones_like(logits)
        _, lowest = tf.math.top_k(-logits, k=closed)
        return tf.tensor_scatter_nd_update(tf.ones_like(logits), lowest[:, None], tf.zeros((closed,), logits.dtype))

    def advance(self):
        """Counts one training step and fixes the decisions at `freeze_step` (leader only).

        Runs once per outermost call (a trace of the training step, one
        replica's step), whichever member calls it first. Under a
        distribution strategy the assignments are synchronized, which cannot
        happen inside control flow: the cond only computes.
        """
        context = keras_internals.call_context()
        if context is not None and self._advanced_in is context:
            return
        self._advanced_in = context
        self.step.assign_add(1)
        freeze = self.regularizer.freeze_step
        if freeze is None:
            return
        freezing = keras.ops.equal(self.step, freeze)
        self.decisions.assign(tf.cond(freezing, self.project, lambda: tf.identity(self.decisions.value)))
        if self.has_blocks:
            self.block_decisions.assign(
                tf.cond(freezing, self.project_blocks, lambda: tf.identity(self.block_decisions.value)))

    # Every member.
    def update_state(self, training):
        if training:
            self.leader().advance()

    def _factors(self, gates, index, axis, rank):
        """Gate values for the positions `index` along `axis` of a rank-`rank` tensor (1 where ungated)."""
        padded = keras.ops.concatenate([keras.ops.ones((1,), gates.dtype), gates])
        shape = [1] * rank
        shape[axis] = len(index)
        return keras.ops.reshape(keras.ops.take(padded, [i + 1 for i in index]), shape)

    def effective_weight(self, index, weight, training):
        if self.dynamic and training:
            return weight  # the input is gated instead, per example
        gates = self.leader().open_gates(training)
        name = self.weight_names[index]
        for s in self.slices:
            if s["weight"] == name:
                weight = weight * keras.ops.cast(self._factors(gates, s["index"], s["axis"], len(weight.shape)),
                                                 weight.dtype)
        return weight

    def call(self, inputs, training=None, **kwargs):
        self.update_state(training)
        if self.dynamic and training:
            inputs = inputs * keras.ops.cast(self._dynamic_gates(self.leader(), inputs), inputs.dtype)
        outputs = super().call(inputs, training=training, **kwargs)
        if self.is_leader and self.add_regularizer_loss:
            self.add_loss(self.regularization_loss())
        return outputs

    def dynamic_logits(self, leader, inputs):
        """Per-example gate logits of the gated input channels, `(batch, gated channels)` (dynamic gates).

        The static logit plus the trainable scale times the channel's pooled
        input, standardized over the batch. Also returns the gate numbers
        and the positions of the gated channels among the inputs.
        """
        gated = [j for j, i in enumerate(self.inputs_index) if i != UNGATED]
        pooled = keras.ops.mean(inputs, axis=tuple(range(1, len(inputs.shape) - 1))) if len(inputs.shape) > 2 \
            else inputs
        pooled = keras.ops.cast(keras.ops.take(pooled, gated, axis=1), self.dynamic_scale.dtype)
        mean = keras.ops.mean(pooled, axis=0, keepdims=True)
        z = (pooled - mean) / (keras.ops.std(pooled, axis=0, keepdims=True) + _EPSILON)
        gate_of = [self.inputs_index[j] for j in gated]
        logits = keras.ops.take(leader.logits(), gate_of)[None, :] + keras.ops.take(self.dynamic_scale, gated) * z
        return logits, gate_of, gated

    def _dynamic_gates(self, leader, inputs):
        """Per-example gates of the input channels `(batch, 1, ..., channels)`; adds the consensus loss."""
        logits, gate_of, gated = self.dynamic_logits(leader, inputs)
        p = keras.ops.sigmoid(logits)
        hard = keras.ops.cast(logits > 0, p.dtype)
        ste = hard + (p - keras.ops.stop_gradient(p))
        fixed = keras.ops.take(leader.decisions, gate_of)[None, :] * keras.ops.ones_like(ste)
        values = keras.ops.where(leader.frozen(), fixed, ste)
        self.add_loss(leader.regularizer.consensus(p, leader.step))
        same = keras.ops.logical_or(keras.ops.all(hard > 0, axis=0), keras.ops.all(hard == 0, axis=0))
        self.agreement.assign(keras.ops.where(leader.frozen(), 1.0, keras.ops.mean(keras.ops.cast(same, p.dtype))))
        padded = keras.ops.concatenate([keras.ops.ones_like(values[:, :1]), values], axis=1)
        positions = [0] * len(self.inputs_index)
        for k, j in enumerate(gated):
            positions[j] = k + 1
        factors = keras.ops.take(padded, positions, axis=1)
        return keras.ops.reshape(factors, [-1] + [1] * (len(inputs.shape) - 2) + [len(self.inputs_index)])

    def summary_fields(self):
        """`{"closed gates": n}` on the leader (and `"closed blocks"` with block gates): closed at inference."""
        if not self.is_leader:
            return {}
        fields = {"closed gates": int(keras.ops.sum(1 - self.open_gates()))}
        if self.has_blocks:
            fields["closed blocks"] = len(self.closed_blocks())
        return fields

    def target_sparsity(self):
        """The regularizer's sparsity on the leader, else None."""
        return self.regularizer.sparsity if self.is_leader else None

    def get_config(self):
        config = super().get_config()
        config.update(
            gates=self.gates,
            slices=self.slices,
            inputs_index=self.inputs_index,
            bank=self.bank,
            regularizer=None if self.regularizer is None else keras.saving.serialize_keras_object(self.regularizer),
            add_loss=self.add_regularizer_loss,
            dynamic=self.dynamic,
        )
        return config


@keras.saving.register_keras_serializable(package="tfsparse")
class BlockGate(GateSetMember, LayerWrapper):
    """The `Add` of a residual block, with the block's branches multiplied by a binary gate.

    Built by `tfsparse.polarize(..., blocks=f)`: the gate is entry `block` of
    the leader's block gates (see `Gated`); the `Add` input at `identity`
    (the shortcut) passes as it is. A closed block computes its shortcut,
    as after `tfsparse.surgery.remove_blocks`. `tfsparse.strip` removes the
    closed blocks and returns the others as plain `Add` layers.

    Args:
        layer: the block's `keras.layers.Add`.
        gates: name of the gate set (as `Gated`'s).
        block: the block's index among the leader's block gates.
        identity: the index of the shortcut among the `Add`'s inputs.
        **kwargs: base layer arguments.

    Example:

    >>> gated = tfsparse.polarize(tfsparse.models.resnet20((8, 8, 1), width=0.25), 0.3, steps=10, blocks=0.3)
    >>> len([layer for layer in gated.layers if isinstance(layer, BlockGate)])  # 7 blocks have an identity shortcut
    7
    """

    def __init__(self, layer, gates, block, identity, **kwargs):
        super().__init__(layer, **kwargs)
        if type(layer) is not keras.layers.Add:
            raise ValueError(f"Argument `layer` must be a keras.layers.Add, received: {type(layer).__name__}.")
        self.gates = gates
        self.block = int(block)
        self.identity = int(identity)
        self._leader_ref = None

    def call(self, inputs, training=None):
        leader = self.leader()
        if training:
            leader.advance()
        gate = leader.open_blocks(training)[self.block]
        return self.layer.call([x if i == self.identity else x * keras.ops.cast(gate, x.dtype)
                                for i, x in enumerate(inputs)])

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "gates": self.gates, "block": self.block, "identity": self.identity}


def _find_leader(gates, entry_layer, caller):
    leaders = [layer for _, layer in named_layers(entry_layer)
               if isinstance(layer, Gated) and layer.gates == gates and layer.is_leader]
    if len(leaders) != 1:
        raise RuntimeError(
            f"Gate set {gates!r} of {caller.name!r} has {len(leaders)} leaders in {entry_layer.name!r} (one "
            f"expected): every `Gated` layer of a model made by `tfsparse.polarize` must be called as part of "
            f"that model, which holds the gate logits once."
        )
    return leaders[0]


def gate_sets(model):
    """Returns `{gate set name: (leader, members)}` for the `Gated` and `BlockGate` layers of `model`, linking each.

    After this, the members' `effective_weights()` work outside a model call.

    Raises:
        RuntimeError: if a set has no leader or several.

    Example:

    >>> gated = tfsparse.polarize(model, sparsity=0.5, steps=10)
    >>> [(leader.name, len(members)) for leader, members in gate_sets(gated).values()]
    [('gated_conv2', 3)]
    """
    members = {}
    for _, layer in named_layers(model):
        if isinstance(layer, (Gated, BlockGate)):
            members.setdefault(layer.gates, []).append(layer)
    sets = {}
    for name, layers in members.items():
        leader = _find_leader(name, model, layers[0])
        for layer in layers:
            layer.link(leader)
        sets[name] = (leader, layers)
    return sets
