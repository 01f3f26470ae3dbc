"""Lottery Jackpots: a sparse mask over a frozen pre-trained model, searched by scores.

Zhang, Lin et al., "Lottery Jackpots Exist in Pre-trained Models" (TPAMI 2023).
"""

import random

import keras
import tensorflow as tf

from tfsparse.layers.prunable import SUPPORTED_LAYERS, is_prunable, prunable_weight_names
from tfsparse.layers.scored import INITS, Scored
from tfsparse.layers.wrapper import ParametrizedWrapper
from tfsparse.methods.magnitude import _leaf_layers
from tfsparse.scoring import magnitude
from tfsparse.surgery.clone import copy_layer, transform_layers


def lottery_jackpot(model, sparsity, init="magnitude", exclude=None, weight_decay=5e-4, seed=None):
    """Prepares a pre-trained model for a Lottery Jackpot search.

    Every prunable layer (except `exclude`) is wrapped in
    `tfsparse.layers.Scored`: its pre-trained weights are frozen and a
    trainable score per weight chooses which of them are kept. How many each
    layer keeps is fixed once, by one global magnitude threshold over all
    the wrapped kernels, and stays exact for the whole search.

    All other weights are frozen too (biases, the dense classifier,
    BatchNormalization's gamma and beta): their variables are made
    non-trainable (`variable.trainable = False`), so optimizers never see
    them and they stay bit-identical. BatchNormalization layers themselves
    stay trainable, so during `fit` they normalise with batch statistics and
    update their moving statistics, as in the reference code (setting a
    BatchNormalization layer's `trainable=False` would switch it to
    inference mode in Keras 3); the moving statistics are therefore the only
    state besides the masks that differs from the pre-trained model. Their
    `momentum` is the model's: Keras' default 0.99 follows a changing mask
    ten times more slowly than the reference's (PyTorch's 0.1, i.e. 0.9 in
    Keras terms), which shows in evaluations early in a short search; set
    `layer.momentum = 0.9` on the search model's BatchNormalization layers
    to match the reference. Keras does not save the `trainable` flag of
    single variables: after `keras.saving.load_model` of a search in
    progress, call `freeze_weights(model)` again before resuming.

    The default recipe, as in the reference: SGD with momentum 0.9 and a
    cosine learning rate from 0.1 (`jackpot_optimizer`), weight decay 5e-4
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
        seed: integer seed of the random init; `None` draws one (it is
            stored in each layer's config).

    Returns:
        A new model to compile and fit (the input is left unchanged; a
        subclassed model is changed in place and returned).

    Raises:
        ValueError: for a sparsity out of range, an unknown `init`, unknown
            names in `exclude`, or a model with nothing left to prune.
        TypeError: if `model` is not a keras.Model or `seed` not an int.

    Example:

    >>> search = tfsparse.lottery_jackpot(pretrained, sparsity=0.9)
    >>> search.compile(tfsparse.jackpot_optimizer(steps=len(train_ds)),
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
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model, received: {model!r} (of type {type(model).__name__})."
        )
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"Argument `sparsity` must be a number in [0, 1), received: {sparsity!r}.")
    if init not in INITS:
        raise ValueError(f"Argument `init` must be one of {INITS}, received: {init!r}.")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"Argument `weight_decay` must be a number >= 0, received: {weight_decay!r}.")
    if seed is None:
        seed = random.randrange(2**31 - 1)
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"Argument `seed` must be an int or None, received: {seed!r}.")

    wrapped = [layer.name for layer in _leaf_layers(model) if isinstance(layer, ParametrizedWrapper)]
    if wrapped:
        raise ValueError(
            f"Argument `model` already holds tfsparse wrappers ({wrapped}); pass the plain "
            f"pre-trained model (e.g. `tfsparse.strip_pruning(model)`)."
        )
    prunable = [layer for layer in _leaf_layers(model) if is_prunable(layer)]
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
            f"{', '.join(SUPPORTED_LAYERS)}."
        )

    plan = {id(layer): (i, s) for i, (layer, s) in enumerate(zip(targets, layer_sparsities(targets, sparsity)))}
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None

    def wrap(layer):
        if id(layer) not in plan:
            return copy_layer(layer)
        index, layer_sparsity = plan[id(layer)]
        return Scored(
            copy_layer(layer), sparsity=layer_sparsity, init=init, seed=seed + index, score_regularizer=regularizer
        )

    search = transform_layers(model, wrap)
    freeze_weights(search)
    return search


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
        {w.name: w for w in layer.weights}[name] for layer in layers for name in prunable_weight_names(layer)
    ]
    masks = magnitude.global_topk_masks([tf.abs(w) for w in weights], sparsity)
    shares = iter(
        (w.shape.num_elements() - int(tf.reduce_sum(m))) / w.shape.num_elements() for w, m in zip(weights, masks)
    )
    return [[next(shares) for _ in prunable_weight_names(layer)] for layer in layers]


def freeze_weights(model):
    """Makes every variable of `model` non-trainable except the jackpot scores.

    Layers keep their `trainable` flag, so BatchNormalization still uses
    batch statistics in training.

    Args:
        model: a model holding `tfsparse.layers.Scored` layers.

    Returns:
        The number of variables that remain trainable (the score tensors).
    """
    scores = {id(v) for layer in _leaf_layers(model) if isinstance(layer, Scored) for v in layer.scores}
    for variable in model.variables:
        if id(variable) not in scores:
            variable.trainable = False
    return len(scores)


def jackpot_optimizer(steps, learning_rate=0.1, momentum=0.9):
    """The reference search optimizer: SGD with momentum and a cosine learning rate.

    The learning rate decays per step (the reference decays it per epoch).
    Weight decay is not part of it: `lottery_jackpot(weight_decay=...)`
    puts it on the scores, coupled with the momentum. The score gradient is
    `g * w`, so the step a mask change needs depends on the weights' scale:
    0.1 is the reference's value for CIFAR networks searched for 30 epochs;
    for a search of one epoch on Fashion-MNIST, 0.3 did best (see
    `benchmarks/jackpot.py`, which picks it on held-out data).

    Args:
        steps: total number of training steps of the search (> 0).
        learning_rate: initial learning rate.
        momentum: SGD momentum.

    Returns:
        A `keras.optimizers.SGD`.

    Raises:
        ValueError: if `steps` is not a positive int.

    Example:

    >>> optimizer = jackpot_optimizer(steps=30 * 391)
    >>> type(optimizer).__name__, optimizer.momentum
    ('SGD', 0.9)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"Argument `steps` must be a positive int, received: {steps!r}.")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    return keras.optimizers.SGD(schedule, momentum=momentum)
