"""The polarization term on channel gates: one implementation, a layer loss or a gradient transform.

`Polarization` computes the loss on a vector of gate logits (used by the
leader `tfsparse.layers.Gated` layer as a layer loss, so a plain `fit`
minimizes it); `polarization_gradients` adds the gradient of the same loss
to a custom training loop's gradients, for models whose gates do not add it
(`tfsparse.polarize(..., add_loss=False)`).
"""

import keras
import tensorflow as tf

from tfsparse import checks
from tfsparse.layers.gate import gate_sets


def polarization(probabilities, t=1.0):
    """Polarization of gate probabilities (Zhuang et al., 2020), per gate.

    `t * mean|p| - mean|p - mean(p)|`: the sums of the paper divided by the
    number of gates, so that the weight of the term does not depend on the
    model's width. Minimizing it pushes every probability to 0 or to a common
    high value (`t` about 1: the larger, the more close).

    Args:
        probabilities: a 1-D tensor of values in [0, 1].
        t: weight of the L1 part.

    Returns:
        A scalar tensor.

    Example:

    >>> float(polarization(np.array([0.0, 1.0, 1.0, 0.0], "float32"), t=1.0))
    0.0
    >>> round(float(polarization(np.array([0.5, 0.5], "float32"), t=1.2)), 4)
    0.6
    """
    p = keras.ops.convert_to_tensor(probabilities)
    return t * keras.ops.mean(keras.ops.abs(p)) - keras.ops.mean(keras.ops.abs(p - keras.ops.mean(p)))


@keras.saving.register_keras_serializable(package="tfsparse")
class Polarization:
    """The regularizer of polarization gating, with its schedule.

    On a vector of gate logits, with `p = sigmoid(logits)` and `open` the
    hard gates `1[p > 0.5]` (straight-through gradient to `p`):

        scale(step) * (polarization_weight * polarization(p, t)
                       + sparsity_weight * (mean(open) - (1 - sparsity))**2)

    and for input-dependent gates, per gated layer, `scale(step) *
    consensus_weight * mean(variance of each gate's probability across the
    batch)` (`consensus`). `scale` is 0 for the first `warmup_steps` steps,
    rises linearly to 1 over `ramp_steps`, and is 0 again from `freeze_step`
    on, where the gates' decisions are fixed (see `tfsparse.layers.Gated`).
    Steps count training calls from 1.

    Args:
        sparsity: fraction of the gated channels to close, in [0, 1).
        polarization_weight: weight of the polarization term.
        sparsity_weight: weight of the sparsity term.
        consensus_weight: weight of the consensus term (dynamic gates).
        t: the polarization's `t`.
        warmup_steps: steps without regularization.
        ramp_steps: steps over which the weights rise to their value.
        freeze_step: the step at which the decisions are fixed, or None
            (never: the hard gates follow the logits to the end).

    Raises:
        ValueError: for a sparsity outside [0, 1), a negative weight or step
            count, or a `freeze_step` before the end of the ramp.

    Example:

    >>> regularizer = tfsparse.optimizers.Polarization(0.5, 1.0, sparsity_weight=4.0, t=1.0, warmup_steps=10)
    >>> float(regularizer(np.array([3.0, -3.0], "float32"), step=5))  # warming up
    0.0
    >>> round(float(regularizer(np.array([3.0, 3.0], "float32"), step=20)), 4)  # sigmoid(3) + 4 * 0.5**2
    1.9526
    """

    def __init__(self, sparsity, polarization_weight=30.0, sparsity_weight=600.0, consensus_weight=1.0, t=0.5,
                 warmup_steps=0, ramp_steps=0, freeze_step=None):
        self.sparsity = checks.check_fraction(sparsity, "sparsity")
        for name, value in (("polarization_weight", polarization_weight), ("sparsity_weight", sparsity_weight),
                            ("consensus_weight", consensus_weight), ("t", t)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Argument `{name}` must be a number >= 0, received: {value!r}.")
        for name, value in (("warmup_steps", warmup_steps), ("ramp_steps", ramp_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Argument `{name}` must be an integer >= 0, received: {value!r}.")
        if freeze_step is not None and (isinstance(freeze_step, bool) or not isinstance(freeze_step, int)
                                        or freeze_step <= warmup_steps + ramp_steps):
            raise ValueError(
                f"Argument `freeze_step` must be None or an integer after the warm-up and the ramp "
                f"(> {warmup_steps + ramp_steps}), received: {freeze_step!r}."
            )
        self.polarization_weight = float(polarization_weight)
        self.sparsity_weight = float(sparsity_weight)
        self.consensus_weight = float(consensus_weight)
        self.t = float(t)
        self.warmup_steps = warmup_steps
        self.ramp_steps = ramp_steps
        self.freeze_step = freeze_step

    def scale(self, step):
        """The factor of every term at `step` (a scalar tensor)."""
        step = keras.ops.cast(step, "float32")
        ramp = keras.ops.clip((step - self.warmup_steps) / max(self.ramp_steps, 1), 0.0, 1.0)
        started = keras.ops.cast(step > self.warmup_steps, "float32")
        if self.freeze_step is None:
            return ramp * started
        return ramp * started * keras.ops.cast(step < self.freeze_step, "float32")

    def __call__(self, logits, step):
        """The polarization and sparsity terms on a vector of gate logits at `step`."""
        logits = keras.ops.convert_to_tensor(logits)
        p = keras.ops.sigmoid(logits)
        hard = keras.ops.cast(logits > 0, p.dtype)
        open_gates = hard + (p - keras.ops.stop_gradient(p))
        gap = keras.ops.mean(open_gates) - (1.0 - self.sparsity)
        loss = self.polarization_weight * polarization(p, self.t) + self.sparsity_weight * gap**2
        return keras.ops.cast(self.scale(step), loss.dtype) * loss

    def consensus(self, probabilities, step):
        """The consensus term on per-example probabilities `(batch, gates)` at `step`."""
        variance = keras.ops.mean(keras.ops.var(probabilities, axis=0))
        return keras.ops.cast(self.scale(step), variance.dtype) * self.consensus_weight * variance

    def get_config(self):
        return {
            "sparsity": self.sparsity, "polarization_weight": self.polarization_weight,
            "sparsity_weight": self.sparsity_weight, "consensus_weight": self.consensus_weight, "t": self.t,
            "warmup_steps": self.warmup_steps, "ramp_steps": self.ramp_steps, "freeze_step": self.freeze_step,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def polarization_gradients(model, gradients, variables):
    """Adds the gradient of every gate set's `Polarization` loss to a custom loop's gradients.

    For a model from `tfsparse.polarize(..., add_loss=False)`, whose gates
    leave the polarization and sparsity terms out of `model.losses`. Call it
    once per step, after the forward pass of that step (which advances the
    gates' step counter), between `tape.gradient` and `apply_gradients`.
    The consensus term of dynamic gates depends on the activations: it stays
    in `model.losses` either way.

    Args:
        model: the gated model.
        gradients: the gradients of `variables`, in order (`None` allowed).
        variables: the variables they belong to (e.g.
            `model.trainable_variables`); the gate logits must be among them.

    Returns:
        The list of gradients with the regularizer's gradient added to the
        gate logits' entries (channel and block gates).

    Raises:
        ValueError: if `model` holds no gates, or a gate set's logits are not
            among `variables`.

    Example:

    >>> gated = tfsparse.polarize(model, sparsity=0.5, steps=20, add_loss=False)
    >>> optimizer = keras.optimizers.Adam(0.01)
    >>> with tf.GradientTape() as tape:
    ...     loss = keras.losses.sparse_categorical_crossentropy(y[:32], gated(x[:32], training=True),
    ...                                                         from_logits=True)
    >>> variables = gated.trainable_variables
    >>> gradients = tfsparse.optimizers.polarization_gradients(gated, tape.gradient(loss, variables), variables)
    >>> _ = optimizer.apply_gradients(zip(gradients, variables))
    """
    sets = gate_sets(model)
    if not sets:
        raise ValueError(f"Argument `model` ({model.name!r}) holds no gates; make it with `tfsparse.polarize`.")
    gradients = list(gradients)
    position = {id(v): i for i, v in enumerate(variables)}
    for leader, _ in sets.values():
        logits = [leader.gate_logits] + ([leader.block_logits] if leader.has_blocks else [])
        missing = [v.path for v in logits if id(v) not in position]
        if missing:
            raise ValueError(
                f"Argument `variables` does not hold the gate logits {missing} of {leader.name!r}; pass "
                f"`model.trainable_variables`."
            )
        with tf.GradientTape() as tape:
            loss = leader.regularization_loss()
        for variable, extra in zip(logits, tape.gradient(loss, [v.value for v in logits])):
            i = position[id(variable)]
            gradients[i] = extra if gradients[i] is None else gradients[i] + extra
    return gradients
