"""`Scored`: a frozen layer whose kept weights are chosen by trainable scores."""

import math
import numbers

import keras
import tensorflow as tf

from tfsparse.checks import check_seed
from tfsparse.layers.wrapper import ParametrizedWrapper
from tfsparse.scoring import magnitude

INITS = ("magnitude", "random")
# Scores given by the magnitude init to kept and to pruned weights.
KEPT_SCORE = 1.0
PRUNED_SCORE = 0.99


@keras.saving.register_keras_serializable(package="tfsparse")
class Scored(ParametrizedWrapper):
    """Selects a fixed number of a layer's frozen weights with trainable scores.

    The wrapped layer's weights (kernel and bias) are frozen: they are made
    non-trainable, so no optimizer ever sees them and they stay bit-identical
    to the values the layer had when wrapped (e.g. pre-trained ones). Each
    prunable weight gets a trainable `scores` tensor of its shape and a
    non-trainable 0/1 `mask`; the effective weight is `weight * mask`, where
    the mask keeps exactly `n - round(sparsity * n)` entries. The gradient
    reaches the scores straight through the mask: `dL/dscores = dL/dmask =
    g * weight`, with `g` the gradient of the effective weight.

    The mask follows the scores inside the compiled training step: every call
    with `training=True` first updates it from the current scores (i.e. right
    after the previous optimizer step), and inference uses the mask that this
    update would give, without storing it. The update is plain top-k
    re-ranking of the scores, or, once `restrict(rate)` has been called (see
    `tfsparse.callbacks.ShortRestriction`), the short restriction rule of
    `short_restriction`. Either way the number of kept weights never changes,
    and a custom training loop needs no extra call.

    Args:
        layer: the layer to wrap (a type with prunable weights, see `tfsparse.register_layer`).
        sparsity: fraction of each prunable weight to prune, in [0, 1]: one
            number, or a list with one per prunable weight of the layer.
        init: `"magnitude"` (the largest-magnitude weights are kept; their
            scores start at 1.0 and the others at 0.99) or `"random"`
            (Kaiming-uniform scores from `seed`, uniform in
            `[-1/sqrt(fan_in), 1/sqrt(fan_in)]` as in Edge-popup; the top-k
            are kept).
        seed: integer seed of the random init, in `[0, 2**32)` (used by
            `"random"` only).
        score_regularizer: regularizer of the scores, e.g.
            `keras.regularizers.L2(wd / 2)` for weight decay `wd` coupled
            with the optimizer's momentum.
        **kwargs: base layer arguments.

    Raises:
        ValueError: for a sparsity out of range or of the wrong length, or
            an unknown `init`.

    Example:

    >>> layer = Scored(keras.layers.Dense(4), sparsity=0.75)
    >>> y = layer(np.ones((2, 4), "float32"))
    >>> int(ops.sum(layer.masks[0]))  # 16 weights, 4 kept
    4
    """

    def __init__(self, layer, sparsity=0.5, init="magnitude", seed=0, score_regularizer=None, **kwargs):
        super().__init__(layer, **kwargs)
        count = len(self.weight_names)
        values = list(sparsity) if isinstance(sparsity, (list, tuple)) else [sparsity] * count
        if len(values) != count or not all(
            isinstance(s, numbers.Real) and not isinstance(s, bool) and 0 <= s <= 1 for s in values
        ):
            raise ValueError(
                f"Argument `sparsity` must be a number in [0, 1] or a list of {count} such "
                f"numbers (one per prunable weight {self.weight_names} of {layer.name!r}), "
                f"received: {sparsity!r}."
            )
        if init not in INITS:
            raise ValueError(f"Argument `init` must be one of {INITS}, received: {init!r}.")
        self.sparsity = [float(s) for s in values]
        self.init = init
        self.seed = check_seed(seed)
        self.score_regularizer = keras.regularizers.get(score_regularizer)

    def build_parametrization(self, weights):
        for w in self.layer.weights:
            w.trainable = False
        self.num_pruned = [
            int(tf.get_static_value(magnitude.num_pruned(s, w.shape.num_elements())))
            for s, w in zip(self.sparsity, weights)
        ]
        scores, masks = zip(*(self._initial_state(i) for i in range(len(weights))))
        self.scores = self._variables_like(weights, "scores", scores, regularizer=self.score_regularizer)
        self.masks = self._variables_like(
            weights, "mask", masks, trainable=False, aggregation="only_first_replica"
        )
        self.restricted = self.add_weight(
            name="restricted", shape=(), initializer="zeros", dtype="bool", trainable=False,
            aggregation="only_first_replica",
        )
        self.swap_rate = self.add_weight(
            name="swap_rate", shape=(), initializer="ones", dtype="float64", trainable=False,
            aggregation="only_first_replica",
        )

    def _variables_like(self, weights, suffix, values, **kwargs):
        """One variable per weight, named `<weight>_<suffix>`, of its shape and dtype, set to `values`."""
        return [
            self.add_weight(name=f"{w.name}_{suffix}", shape=w.shape, initializer=_constant(v), dtype=w.dtype, **kwargs)
            for w, v in zip(weights, values)
        ]

    def _initial_state(self, index):
        """Returns `(scores, mask)` of prunable weight `index` at initialization."""
        weight = self.prunable_weights[index]
        sparsity = self.sparsity[index]
        if self.init == "magnitude":
            mask = magnitude.topk_mask(tf.abs(weight), sparsity)
            scores = tf.where(mask > 0, KEPT_SCORE, PRUNED_SCORE)
            return tf.cast(scores, weight.dtype), mask
        # Kaiming-uniform scores, as Edge-popup initializes its scores.
        bound = (1.0 / math.prod(weight.shape[:-1] or weight.shape)) ** 0.5
        scores = tf.random.stateless_uniform(
            weight.shape, seed=[self.seed, index], minval=-bound, maxval=bound, dtype=weight.dtype
        )
        return scores, magnitude.topk_mask(scores, sparsity)

    def initial_masks(self):
        """Returns the masks as initialized (recomputed from the frozen weights and seed)."""
        return [self._initial_state(i)[1] for i in range(len(self.masks))]

    def restrict(self, rate):
        """Sets the mask update rule from the next training step on.

        Args:
            rate: `None` for plain top-k re-ranking of the scores, or a
                number in [0, 1]: the short restriction rule, swapping
                `ceil(rate * n)` of `n` candidate pairs (0 freezes the mask).

        Raises:
            ValueError: if `rate` is out of range.
        """
        if rate is not None and not (isinstance(rate, numbers.Real) and not isinstance(rate, bool) and 0 <= rate <= 1):
            raise ValueError(f"Argument `rate` must be None or a number in [0, 1], received: {rate!r}.")
        self.restricted.assign(rate is not None)
        if rate is not None:
            self.swap_rate.assign(float(rate))

    def _next_mask(self, index):
        scores = self.scores[index].value
        mask = self.masks[index].value
        return tf.cond(
            self.restricted.value,
            lambda: short_restriction(scores, mask, self.num_pruned[index], self.swap_rate.value),
            lambda: magnitude.topk_mask(scores, self.sparsity[index]),
        )

    def update_state(self, training):
        if not training:
            return
        for index, mask in enumerate(self.masks):
            mask.assign(self._next_mask(index))

    def effective_weight(self, index, weight, training):
        if not training:
            return weight * self._next_mask(index)
        scores = self.scores[index]
        # mask + 0 in the forward pass (exactly), identity to the scores backward.
        straight_through = self.masks[index] + (scores - keras.ops.stop_gradient(scores))
        return weight * straight_through

    def summary_fields(self):
        """`{"hamming": n}`: entries whose mask differs from the initial mask."""
        moved = sum(
            int(keras.ops.sum(keras.ops.cast(self._next_mask(i) != initial, "int64")))
            for i, initial in enumerate(self.initial_masks())
        )
        return {"hamming": moved}

    def get_config(self):
        config = super().get_config()
        config.update(
            sparsity=self.sparsity,
            init=self.init,
            seed=self.seed,
            score_regularizer=keras.regularizers.serialize(self.score_regularizer)
            if self.score_regularizer is not None
            else None,
        )
        return config


def _constant(value):
    def initializer(shape, dtype=None):
        return tf.cast(value, dtype)

    return initializer


def short_restriction(scores, mask, num_pruned, rate):
    """Applies the short restriction rule of Lottery Jackpots to one mask.

    With `t` the `num_pruned`-th smallest score, the candidates to revive are
    the pruned entries scoring above `t` and the candidates to remove are the
    kept entries scoring at or below `t`. If both are non-empty and equally
    many (`n`), the `ceil(rate * n)` highest-scoring revive candidates are
    kept and as many lowest-scoring remove candidates pruned (ties by
    position); otherwise the mask is returned unchanged. The number of kept
    entries never changes. With `rate=1` the result is the top-k of the
    scores whenever the rule allows a change.

    Args:
        scores: a float tensor.
        mask: a 0/1 tensor of the same shape with `num_pruned` zeros.
        num_pruned: Python int, the layer's number of pruned entries.
        rate: scalar in [0, 1], fraction of the candidate pairs to swap.

    Returns:
        The new mask, of `mask`'s shape and dtype.

    Example:

    >>> short_restriction(tf.constant([0.2, 0.9, 0.5, 0.1]),
    ...                   tf.constant([1.0, 0.0, 1.0, 0.0]), 2, 1.0).numpy()
    array([0., 1., 1., 0.], dtype=float32)
    """
    flat_scores = tf.reshape(scores, [-1])
    size = flat_scores.shape[0]
    if num_pruned == 0 or num_pruned == size:
        return mask
    threshold = _nth_smallest(flat_scores, num_pruned - 1)  # the num_pruned-th smallest score
    kept = tf.reshape(mask, [-1]) > 0
    revive = tf.logical_and(tf.logical_not(kept), flat_scores > threshold)
    remove = tf.logical_and(kept, flat_scores <= threshold)
    count = tf.reduce_sum(tf.cast(revive, tf.int32))
    allowed = tf.logical_and(count > 0, tf.equal(count, tf.reduce_sum(tf.cast(remove, tf.int32))))
    swaps = tf.cast(tf.math.ceil(tf.cast(rate, tf.float64) * tf.cast(count, tf.float64)), tf.int32)
    swaps = tf.where(allowed, tf.minimum(swaps, count), 0)

    def best(candidates, key):
        # The `swaps` candidates of highest `key`, equal keys by position.
        keys = tf.where(candidates, key, -float("inf"))
        return tf.logical_and(candidates, magnitude.keep_highest(keys, swaps))

    # Ranking is only needed to swap some but not all of the candidates.
    swap_all = tf.logical_and(allowed, tf.equal(swaps, count))
    revive, remove = tf.cond(
        tf.logical_and(swaps > 0, swaps < count),
        lambda: (best(revive, flat_scores), best(remove, -flat_scores)),
        lambda: (tf.logical_and(revive, swap_all), tf.logical_and(remove, swap_all)),
    )
    new = tf.where(revive, True, tf.where(remove, False, kept))
    return tf.reshape(tf.cast(new, mask.dtype), tf.shape(mask))


def _nth_smallest(values, n):
    """The `n`-th smallest (from 0) of a 1-D tensor `values`, `n` a scalar, in linear time (also under XLA)."""
    return magnitude.kth_highest(values, values.shape[0] - n)[0]
