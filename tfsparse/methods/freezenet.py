"""FreezeNet and SNIP: one-shot saliency at the seeded init, frozen or zeroed weights."""

import fractions
import math

import keras

from tfsparse import checks, scoring
from tfsparse.layers.frozen import Frozen, initial_value
from tfsparse.layers.masked import Masked
from tfsparse.registry import initializer_of, is_prunable, named_weights
from tfsparse.surgery.clone import copy_layer, transform_layers
from tfsparse.walk import check_unwrapped, named_layers


def reinitialize(model, seed):
    """Returns a copy of `model` with its weights drawn from `seed`.

    Every weight that has an initializer on its layer (`kernel`, `bias`,
    BatchNormalization's `gamma`, ...) is drawn with that initializer from a
    seed derived from `(seed, layer path, weight name)`: the values do not
    depend on layer creation order or on the process, and they are the
    values `tfsparse.layers.Frozen` regenerates. Other weights are copied.
    BatchNormalization statistics restart from their initializers too.

    Applied to a pruned model, it gives the "same widths trained from
    scratch" contrast of the structured methods (Liu et al., 2019,
    "Rethinking the Value of Network Pruning"): the architecture the
    pruning found, with a new random initialization.

    Args:
        model: a built, plain (unwrapped) Keras model.
        seed: an integer in `[0, 2**32)`.

    Returns:
        A new, uncompiled `keras.Model` (a subclassed model is changed in
        place, see `tfsparse.surgery.transform_layers`).

    Raises:
        ValueError: if the model is not built or already holds tfsparse wrappers.
        TypeError: if `seed` is not an integer, or an initializer draws random
            values without taking a seed.

    Example:

    >>> a = reinitialize(tfsparse.models.lenet_300_100(), seed=7)
    >>> b = reinitialize(tfsparse.models.lenet_300_100(), seed=7)
    >>> all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    True
    """
    seed = checks.check_seed(seed)
    _check_plain(model)
    copy = transform_layers(model, copy_layer)
    for path, layer in named_layers(copy):
        if isinstance(layer, keras.Model):
            continue
        # A prunable layer's sublayers are drawn as part of it (an LSTM's
        # `lstm_cell/kernel`), as `Frozen` draws them; other sublayers are
        # walked, and drawn, on their own.
        entered = not is_prunable(layer)
        for name, weight in named_weights(layer):
            if not (entered and "/" in name) and initializer_of(layer, name) is not None:
                weight.assign(initial_value(layer, name, seed, path))
    return copy


def trainable_count(freeze_rate, size):
    """Returns `ceil((1 - freeze_rate) * size)`, computed exactly.

    The rate is taken as the decimal it prints as, so `0.995` of 430,500
    weights leaves exactly 2,153 to train, whatever the float rounding.
    """
    kept = (1 - fractions.Fraction(str(freeze_rate))) * size
    return math.ceil(kept)


def freezenet(model, freeze_rate, data, seed=None, batches=1, loss=None):
    """FreezeNet: trains a few weights chosen at init, freezes the rest at their random init.

    Wimmer et al., "FreezeNet: Full Performance by Reduced Storage Costs"
    (ACCV 2020). The model's weights are drawn from `seed` with each
    layer's own initializers (`reinitialize`); at exactly that init, one
    forward and backward pass per batch scores every kernel weight by SNIP's
    saliency `|w * dL/dw|`; the `k = ceil((1 - freeze_rate) * n)` most
    salient of the `n` kernel weights, globally across all kernels, stay
    trainable (exact top-k, ties broken by position). Every other kernel
    weight is frozen at its initial value, which `tfsparse.layers.Frozen`
    regenerates from the seed instead of storing it. Biases and all other
    weights always train.

    The result is dense at inference (frozen weights are random, not zero):
    it saves stored and trained parameters, not FLOPs. Its compact form is
    written by `tfsparse.export.save_compact`; `tfsparse.summary` shows the
    trained and frozen counts and the compression factor, all parameters
    over trained ones.

    Args:
        model: a built, plain Keras model (its current weights are replaced
            by the seeded init).
        freeze_rate: fraction of kernel weights to freeze, in `[0, 1]`.
        data: batches to score with: a `tf.data.Dataset`, an iterable of
            `(x, y)` batches, or one `(x, y)` tuple (see
            `tfsparse.scoring.snip_saliency`).
        seed: the model seed, an integer in `[0, 2**32)`; `None` draws one
            from Python's `random` (seeded by `keras.utils.set_random_seed`).
            It is recorded in every `Frozen` layer.
        batches: number of batches to average the saliency over.
        loss: loss for scoring; defaults to the compiled loss, else sparse
            categorical cross-entropy on logits.

    Returns:
        A new, uncompiled `keras.Model` with `Frozen` layers, ready to
        `compile` and `fit`.

    Raises:
        ValueError: for a bad `freeze_rate`, `batches` or `seed`, an unbuilt
            model, or one that already holds tfsparse wrappers.
        TypeError: for a bad `seed`, `data` or `loss`.

    Example:

    >>> model = tfsparse.freezenet(model, 0.99, train_ds, seed=7)
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(train_ds, epochs=1, verbose=0)
    >>> tfsparse.summary(model, print_fn=None).total["trained"]  # ceil(1% of 5,584 weights)
    56
    >>> tfsparse.export.save_compact(model, "model.tfsparse")
    """
    checks.check_fraction(freeze_rate, "freeze_rate", include_one=True)
    seed = checks.resolve_seed(seed)
    base = reinitialize(model, seed)
    scores = scoring.snip_saliency(base, data, batches=batches, loss=loss)
    size = sum(int(s.shape.num_elements()) for s in scores.values())
    pruned = (size - trainable_count(freeze_rate, size)) / size
    masks = dict(zip(scores, scoring.global_topk_masks(list(scores.values()), pruned)))
    return _wrap(base, masks, lambda layer, path: Frozen(layer, seed=seed, layer_path=path))


def snip(model, sparsity, data, batches=1, loss=None, seed=None):
    """SNIP: prunes the least salient weights at init, once, before training.

    Lee et al., "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity" (ICLR 2019). Every kernel weight is scored by
    `|w * dL/dw|` (`tfsparse.scoring.snip_saliency`) at the model's current weights,
    or at the init drawn from `seed`; the lowest `round(sparsity * n)` of
    all `n` kernel weights, globally, are pruned (exact top-k, as in
    `tfsparse.prune_low_magnitude`). Pruned weights are exactly zero in
    every forward pass (`tfsparse.layers.Masked` with a fixed mask). With
    the same seed and data, the kept weights are those that `freezenet`
    trains at the same rate (`trainable_count` may keep one more).

    Args:
        model: a built, plain Keras model.
        sparsity: fraction of kernel weights to prune, in `[0, 1)`.
        data: batches to score with (see `tfsparse.scoring.snip_saliency`).
        batches: number of batches to average the saliency over.
        loss: loss for scoring; defaults to the compiled loss, else sparse
            categorical cross-entropy on logits.
        seed: `None` to score the model's current weights, or an integer in
            `[0, 2**32)` to draw them first from the seed (`reinitialize`).

    Returns:
        A new, uncompiled `keras.Model` whose prunable layers are `Masked`
        with fixed masks.

    Raises:
        ValueError: if `sparsity`, `batches` or `seed` is out of range, the
            model is not built, or it already holds tfsparse wrappers.
        TypeError: if `seed`, `data` or `loss` has the wrong type.

    Example:

    >>> pruned = tfsparse.snip(model, 0.98, (x[:100], y[:100]))
    >>> masks = [layer.masks[0] for layer in pruned.layers if isinstance(layer, tfsparse.layers.Masked)]
    >>> sum(int(ops.sum(mask)) for mask in masks)  # 2% of the 5,584 weights are kept
    112
    >>> pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # then train as usual
    """
    checks.check_fraction(sparsity, "sparsity")
    if seed is None:
        _check_plain(model)
        base = transform_layers(model, copy_layer)
    else:
        base = reinitialize(model, seed)
    scores = scoring.snip_saliency(base, data, batches=batches, loss=loss)
    masks = dict(zip(scores, scoring.global_topk_masks(list(scores.values()), sparsity)))
    return _wrap(base, masks, lambda layer, path: Masked(layer))


def _wrap(model, masks, make_wrapper):
    """Wraps every prunable layer with `make_wrapper(copy, path)` holding its masks."""
    paths = {id(layer): path for path, layer in named_layers(model)}

    def wrap(layer):
        if not is_prunable(layer):
            return copy_layer(layer)
        path = paths[id(layer)]
        wrapper = make_wrapper(copy_layer(layer), path)
        wrapper.build(layer.get_build_config().get("input_shape"))  # None for a MultiHeadAttention, built already
        wrapper.set_masks([masks[f"{path}/{name}"] for name in wrapper.weight_names])
        return wrapper

    return transform_layers(model, wrap)


def _check_plain(model):
    checks.check_model(model)
    check_unwrapped(model)
