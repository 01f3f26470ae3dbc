"""`CentripetalSGD`: SGD that makes the filters of each cluster identical (Ding et al., C-SGD)."""

import json
from collections.abc import Mapping

import keras
from keras import ops

from tfsparse.optimizers.centripetal import centripetal_gradient

# Biases, BatchNorm gamma and beta (vectors) are pulled at this fraction of the strength, as in the official code.
VECTOR_STRENGTH = 0.1


@keras.saving.register_keras_serializable(package="tfsparse")
class CentripetalSGD(keras.optimizers.SGD):
    """Centripetal SGD: SGD whose update pulls the channels of each cluster together.

    For every weight that carries clustered channels (producer kernels and
    biases, BatchNorm gamma and beta, depthwise kernels: the `"weights"` of
    `tfsparse.csgd.clusters`), the gradient becomes `G' = M G + D W`
    (`centripetal_gradient`): the gradient averaged within each cluster,
    plus weight decay, plus `centripetal_strength` times the distance to the
    cluster mean. Vectors (biases, gamma, beta) are pulled at 0.1x the
    strength, as in the official code. Every other variable gets `G +
    weight_decay * W`. Then SGD with (Nesterov) momentum. Weight decay here
    is the L2 gradient of the paper (it goes through the momentum):
    `weight_decay=1e-4` equals a `keras.regularizers.l2(5e-5)` loss.

    Choosing the strength: the difference between two channels of a cluster
    follows the same linear recurrence whatever the loss (the cluster-mean
    gradient cancels out of it), and shrinks by about
    `learning_rate * strength / (1 - momentum)` of itself per step while that
    figure is small (beyond, the momentum makes it oscillate). The paper's
    3e-3 at learning rate 0.03 is about 1e-3 of itself per step: hundreds of
    epochs. Short runs need a stronger pull: pick it from the
    step budget with `tfsparse.csgd.strength(steps, learning_rate)`, and mind
    that vectors move 10x slower, and that BatchNorm moving statistics of a
    cluster agree only some hundred steps after their filters do (momentum
    0.99): watch them with `tfsparse.callbacks.ClusterMonitor`.

    Variables are matched to the clusters by their path (`variable.path`,
    `"conv1/kernel"`), when the optimizer is built with a model's
    trainable variables (as `model.fit` does). Saved with the model (the
    clusters are in the config) and works under `tf.distribute` (the
    transform runs on the reduced gradient, the same on every replica).

    Args:
        clusters: the result of `tfsparse.csgd.clusters(model, ...)`.
        learning_rate: a float or a `keras.optimizers.schedules` schedule.
        momentum: SGD momentum in [0, 1].
        nesterov: whether to use Nesterov momentum.
        centripetal_strength: the pull `epsilon` >= 0, or a
            `keras.optimizers.schedules.LearningRateSchedule` of the step
            (e.g. `PiecewiseConstantDecay([1000], [0.0, 1.0])` trains the
            full width for 1000 steps before the pull begins).
        weight_decay: the L2 coefficient `eta` >= 0 of every variable.
        **kwargs: other `keras.optimizers.Optimizer` arguments (`name`,
            `clipnorm`, ...).

    Raises:
        TypeError: if `clusters` is not a clusters mapping.
        ValueError: for a negative strength or weight decay, or when built
            with variables that hold none of the clustered weights or whose
            shape does not match them.

    Example:

    >>> clusters = tfsparse.csgd.clusters(model, 0.5, method="even")
    >>> optimizer = tfsparse.optimizers.CentripetalSGD(clusters, 0.05, centripetal_strength=1.0)
    >>> model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> # then model.fit(...); here one step by hand:
    >>> with tf.GradientTape() as tape:
    ...     loss = model.loss(y[:64], model(x[:64], training=True))
    >>> optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    >>> sorted(optimizer.pulled)
    ['conv1/bias', 'conv1/kernel', 'conv2/bias', 'conv2/kernel', 'conv3/bias', 'conv3/kernel']
    """

    def __init__(self, clusters, learning_rate=0.01, momentum=0.9, nesterov=True, centripetal_strength=3e-3,
                 weight_decay=1e-4, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        if not isinstance(clusters, Mapping) or not isinstance(clusters.get("weights"), Mapping):
            raise TypeError(
                f"Argument `clusters` must be the mapping returned by `tfsparse.csgd.clusters(model, ...)`, "
                f"received: {clusters!r:.200} (of type {type(clusters).__name__})."
            )
        scheduled = isinstance(centripetal_strength, keras.optimizers.schedules.LearningRateSchedule)
        for argument, value in (("centripetal_strength", centripetal_strength), ("weight_decay", weight_decay)):
            if scheduled and argument == "centripetal_strength":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"Argument `{argument}` must be a number >= 0"
                    f"{' or a LearningRateSchedule' if argument == 'centripetal_strength' else ''}, "
                    f"received: {value!r}."
                )
        # Kept as text: attributes that hold dicts are wrapped (and the user's dict changed) by object tracking.
        self._clusters = json.dumps(clusters)
        self.centripetal_strength = centripetal_strength if scheduled else float(centripetal_strength)
        # Not the base class's `weight_decay`, which is decoupled and would also shrink the clustered weights.
        self.l2 = float(weight_decay)
        self.pulled = {}

    @property
    def clusters(self):
        """The clusters (a copy)."""
        return json.loads(self._clusters)

    def build(self, variables):
        """Builds the momentum slots and matches the variables to the clustered weights."""
        if self.built:
            return
        super().build(variables)
        weights = self.clusters["weights"]
        if weights and not any(v.path in weights for v in variables):
            raise ValueError(
                f"CentripetalSGD was built with variables {[v.path for v in variables][:6]}... , none of which is "
                f"a clustered weight ({list(weights)[:6]}...): the clusters were made for another model."
            )
        self._pulls = [None if v.path not in weights else self._pull(v, weights[v.path]) for v in variables]
        self.pulled = {v.path: p for v, p in zip(variables, self._pulls) if p is not None}

    def _pull(self, variable, entry):
        """`(labels, axis, factor of the strength)` of one clustered variable, `None` if no cluster has 2 channels."""
        axis, labels = entry["axis"], entry["labels"]
        if variable.shape[axis] != len(labels):
            raise ValueError(
                f"Clustered weight {variable.path!r} has {variable.shape[axis]} positions along axis {axis}, "
                f"the clusters {len(labels)}: the clusters were made for another model."
            )
        if max(labels, default=-1) < 0:
            return None
        return labels, axis, VECTOR_STRENGTH if len(variable.shape) == 1 else 1.0

    def update_step(self, gradient, variable, learning_rate):
        """Transforms the gradient (centripetal or L2), then takes an SGD step."""
        gradient = ops.cast(gradient, variable.dtype)
        # `_get_variable_index` is how Keras' own optimizers find a variable's slots, replicas included.
        pull = self._pulls[self._get_variable_index(variable)]
        if pull is not None:
            labels, axis, factor = pull
            gradient = centripetal_gradient(gradient, variable, labels, self._strength() * factor, self.l2, axis)
        elif self.l2:
            gradient = gradient + self.l2 * variable
        super().update_step(gradient, variable, learning_rate)

    def _strength(self):
        """The strength at the current step."""
        if isinstance(self.centripetal_strength, keras.optimizers.schedules.LearningRateSchedule):
            return ops.cast(self.centripetal_strength(self.iterations), "float32")
        return self.centripetal_strength

    def get_config(self):
        config = super().get_config()
        strength = self.centripetal_strength
        if isinstance(strength, keras.optimizers.schedules.LearningRateSchedule):
            strength = keras.optimizers.schedules.serialize(strength)
        config.update(clusters=self.clusters, centripetal_strength=strength, weight_decay=self.l2)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if isinstance(config.get("centripetal_strength"), dict):
            config = {**config, "centripetal_strength": keras.optimizers.schedules.deserialize(
                config["centripetal_strength"], custom_objects=custom_objects)}
        return super().from_config(config, custom_objects=custom_objects)
