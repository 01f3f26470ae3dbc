"""`ShortRestriction`: the mask update rule of a Lottery Jackpot search."""

import keras

from tfsparse.checks import check_fraction
from tfsparse.layers.scored import Scored
from tfsparse.walk import named_layers


@keras.saving.register_keras_serializable(package="tfsparse")
class ShortRestriction(keras.callbacks.Callback):
    """Applies the short restriction rule to every `Scored` layer during `fit`.

    After each optimizer step, for each layer, the pruned weights whose score
    rose above the layer's threshold may be revived and the kept weights at
    or below it removed; when both lists are non-empty and equally long
    (`n`), the `ceil(rate * n)` best pairs are swapped, otherwise that
    layer's mask does not change this step (see
    `tfsparse.layers.scored.short_restriction`). Without this callback the
    masks simply follow the top-k of the scores.

    When no two scores tie at the threshold, the two lists are always equally
    long, so with `rate=1` the rule gives the top-k; it holds a layer's mask
    still when several scores share the threshold value (e.g. scores that
    have not moved from their 1.0 / 0.99 init, or of weights that get no
    gradient). A rate below 1 is what makes the rule restrict changes.

    The rule runs inside the compiled training step, in each `Scored`
    layer, at the start of the next training call (i.e. right after the
    optimizer step), vectorised over the weights. This callback only turns
    it on and sets the rate, when training starts and at each epoch: it has
    no per-batch hook, which would cost about a fifth of the step time. The
    rule stays on after `fit` (the layers remember it), so that evaluation
    and `tfsparse.strip_pruning` see the mask the rule gives.

    Args:
        rate: fraction of the candidate pairs swapped per step, in [0, 1],
            or a function `rate(epoch) -> float` evaluated at the start of
            each epoch (0-based). The reference code's schedule,
            `ceil((1 - epoch / epochs) ** 4)`, is 1 at every epoch, hence
            the default `1.0`; a decaying schedule such as
            `lambda epoch: (1 - epoch / epochs) ** 4` swaps fewer pairs as
            the search goes on (still at least one pair while the rate is
            above 0).

    Raises:
        ValueError: for a rate outside [0, 1], or, when training starts, a
            model without `tfsparse.layers.Scored` layers.
        TypeError: if `rate` is neither a number nor callable.

    Example:

    >>> search = tfsparse.lottery_jackpot(pretrained, sparsity=0.9)
    >>> search.compile(tfsparse.optimizers.cosine_sgd(steps=len(train_ds)), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = search.fit(train_ds, epochs=1, verbose=0,
    ...                      callbacks=[tfsparse.callbacks.ShortRestriction(rate=1.0)])
    >>> bool(search.get_layer("scored_conv2").restricted.numpy())
    True
    """

    def __init__(self, rate=1.0):
        super().__init__()
        self.rate = rate if callable(rate) else check_fraction(rate, "rate", include_one=True)

    def on_train_begin(self, logs=None):
        self._layers = [layer for _, layer in named_layers(self.model) if isinstance(layer, Scored)]
        if not self._layers:
            raise ValueError(
                f"ShortRestriction found no tfsparse.layers.Scored layer in model "
                f"{self.model.name!r}. Prepare the model with `tfsparse.lottery_jackpot(model, sparsity)`."
            )

    def on_epoch_begin(self, epoch, logs=None):
        rate = self.rate(epoch) if callable(self.rate) else self.rate
        for layer in self._layers:
            layer.restrict(rate)

    def get_config(self):
        return {"rate": self.rate}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

