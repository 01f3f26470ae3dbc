"""Lottery Jackpots: a sparse mask over a frozen pre-trained model, searched by scores.

Zhang, Lin et al., "Lottery Jackpots Exist in Pre-trained Models" (TPAMI 2023).
"""

import keras
import tensorflow as tf

from tfsparse import checks
from tfsparse.layers.fixed import Fixed
from tfsparse.layers.scored import INITS, Scored
from tfsparse.registry import is_prunable, prunable_layer_types, prunable_weight_names
from tfsparse.scoring import magnitude
from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.walk import check_unwrapped, leaf_layers, weight_named


def lottery_jackpot(model, sparsity, init="magnitude", exclude=None, weight_decay=5e-4, seed=None):
    """Prepares a pre-trained model for a Lottery Jackpot search.

    Every prunable layer (except `exclude`) is wrapped in
    `tfsparse.layers.Scored`: its pre-trained weights are frozen and a
    trainable score per weight chooses which of them are kept. How many each
    layer keeps is fixed once, by one global magnitude threshold over all
    the wrapped kernels, and stays exact for the whole search.

    All other weights are frozen too (biases, the dense classifier,
    BatchNormalization's gamma and beta): every other layer with trainable
    weights is wrapped in `tfsparse.layers.fixed.Fixed`, which makes its
    variables non-trainable, so optimizers never see them and they stay
    bit-identical. BatchNormalization layers themselves stay trainable, so
    during `fit` they normalise with batch statistics and update their
    moving statistics, as in the reference code (setting a
    BatchNormalization layer's `trainable=False` would switch it to
    inference mode in Keras 3); the moving statistics are therefore the only
    state besides the masks that differs from the pre-trained model. Their
    `momentum` is the model's: Keras' default 0.99 follows a changing mask
    ten times more slowly than the reference's (PyTorch's 0.1, i.e. 0.9 in
    Keras terms), which shows in evaluations early in a short search; set
    `layer.momentum = 0.9` on the search model's BatchNormalization layers
    to match the reference. The frozen state is part of the layers'
    construction, so a search saved with `model.save` and reloaded with
    `keras.saving.load_model` has the same trainable variables, hence its
    optimizer state back (step count, momentum, learning rate), and
    continues exactly as an uninterrupted search would.

    The default recipe, as in the reference: SGD with momentum 0.9 and a
    cosine learning rate from 0.1 (`tfsparse.optimizers.cosine_sgd`), weight decay 5e-4
    on the scores coupled with the momentum (a `keras.regularizers.L2` on
    the scores, so the logged loss includes it), the plain task loss, and
    `tfsparse.callbacks.ShortRestriction()`. Each part can be replaced: any
    optimizer, `weight_decay=0` and your own regularization, no callback
    (plain top-k re-ranking of the scores).

    Args:
        model: a built Sequential or functional model holding the
            pre-trained weights (or a subclassed model, changed in place).
        sparsity: overall fraction of the wrapped kernels' weights to prune,
            in [0, 1).
        init: `"magnitude"`: the initial mask is the magnitude-pruning mask,
            scores 1.0 for kept and 0.99 for pruned weights; `"random"`:
            Kaiming-uniform random scores (as in Edge-popup), top-k kept.
        exclude: names of prunable layers to keep dense (still frozen).
            `None` keeps the last prunable layer (the classifier) dense; `()`
            prunes every prunable layer.
        weight_decay: coupled weight decay on the scores (>= 0).
        seed: integer seed of the random init, in `[0, 2**32)`; `None` draws one (it is
            stored in each layer's config).

    Returns:
        A new, uncompiled model to compile and fit (the input is left
        unchanged; a subclassed model is changed in place and returned).

    Raises:
        ValueError: for a sparsity out of range, an unknown `init`, unknown
            names in `exclude`, or a model with nothing left to prune.
        TypeError: if `model` is not a keras.Model, `sparsity` not a number
            or `seed` not an int.

    Example:

    >>> search = tfsparse.lottery_jackpot(pretrained, sparsity=0.9)
    >>> search.compile(tfsparse.optimizers.cosine_sgd(steps=len(train_ds)),
    ...                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                metrics=["accuracy"])
    >>> history = search.fit(train_ds, epochs=1, verbose=0,
    ...                      callbacks=[tfsparse.callbacks.ShortRestriction()])
    >>> sparse = tfsparse.strip_pruning(search)
    >>> kernel = sparse.get_layer("conv2").kernel.numpy()
    >>> kept = kernel != 0
    >>> bool(np.array_equal(kernel[kept], pretrained.get_layer("conv2").kernel.numpy()[kept]))
    True
    """
    checks.check_model(model)
    sparsity = checks.check_fraction(sparsity, "sparsity")
    if init not in INITS:
        raise ValueError(f"Argument `init` must be one of {INITS}, received: {init!r}.")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"Argument `weight_decay` must be a number >= 0, received: {weight_decay!r}.")
    seed = checks.resolve_seed(seed)
    check_unwrapped(model)
    prunable = [layer for layer in leaf_layers(model) if is_prunable(layer)]
    names = [layer.name for layer in prunable]
    if exclude is None:
        excluded = set(names[-1:])
    else:
        excluded = {exclude} if isinstance(exclude, str) else set(exclude)
        unknown = sorted(excluded - set(names))
        if unknown:
            raise ValueError(
                f"Argument `exclude` names layers that are not prunable layers of the model: "
                f"{unknown}. Prunable layers: {names}."
            )
    targets = [layer for layer in prunable if layer.name not in excluded]
    if not targets:
        raise ValueError(
            f"Argument `model` ({model.name!r}) has no prunable layer left to search "
            f"(prunable: {names}, excluded: {sorted(excluded)}). Supported layer types: "
            f"{', '.join(prunable_layer_types())}."
        )

    plan = {id(layer): (i, s) for i, (layer, s) in enumerate(zip(targets, layer_sparsities(targets, sparsity)))}
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None

    def wrap(layer):
        if id(layer) not in plan:
            copy = copy_layer(layer)
            return Fixed(copy) if copy.trainable_weights else copy
        index, layer_sparsity = plan[id(layer)]
        return Scored(
            copy_layer(layer), sparsity=layer_sparsity, init=init, seed=(seed + index) % checks.SEED_LIMIT, score_regularizer=regularizer
        )

    return transform_layers(model, wrap)


def layer_sparsities(layers, sparsity):
    """Per-weight sparsities given by one global magnitude threshold.

    Exactly `round(sparsity * total)` of all the layers' prunable weights
    fall below the threshold; each weight's sparsity is its own share.

    Args:
        layers: built prunable layers.
        sparsity: overall fraction to prune.

    Returns:
        A list with, per layer, the list of sparsities of its prunable
        weights (one per name in `prunable_weight_names(layer)`).
    """
    weights = [
        weight_named(layer, name) for layer in layers for name in prunable_weight_names(layer)
    ]
    masks = magnitude.global_topk_masks([tf.abs(w) for w in weights], sparsity)
    shares = iter(
        (w.shape.num_elements() - int(tf.reduce_sum(m))) / w.shape.num_elements() for w, m in zip(weights, masks)
    )
    return [[next(shares) for _ in prunable_weight_names(layer)] for layer in layers]


def freeze_weights(model):
    """Makes every variable of `model` non-trainable except the jackpot scores.

    `lottery_jackpot` freezes its search models by construction; this is
    for models that place `Scored` layers by hand. Layers keep their
    `trainable` flag, so BatchNormalization still uses batch statistics in
    training. Keras does not save the flags of single variables: call it
    again after `keras.saving.load_model`, before `compile`.

    Args:
        model: a model holding `tfsparse.layers.Scored` layers.

    Returns:
        The number of variables that remain trainable (the score tensors).
    """
    scores = {id(v) for layer in leaf_layers(model) if isinstance(layer, Scored) for v in layer.scores}
    for variable in model.variables:
        if id(variable) not in scores:
            variable.trainable = False
    return len(scores)
