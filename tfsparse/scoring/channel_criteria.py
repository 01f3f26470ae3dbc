"""The channel criteria of the structured methods: filter norms, BatchNorm scale, first-order Taylor, Hessian."""

import keras
import numpy as np

from tfsparse import checks
from tfsparse.scoring.channel_importance import ChannelImportance
from tfsparse.scoring.hessian import hessian_trace
from tfsparse.scoring.saliency import mean_gradients
from tfsparse.walk import weight_named


class L1(ChannelImportance):
    """Filter norm `sum |w|` (Li et al., 2017, "Pruning Filters for Efficient ConvNets").

    A channel's score is the sum of `|w|` over its kernels in the group:
    its filter in every producer (bias excluded) and its depthwise filters
    (DepthwiseConv, the depthwise kernel of SeparableConv). BatchNorm
    parameters are not read (see `BNScale`).

    Example:

    >>> groups = [g for g in tfsparse.surgery.dependency_groups(model) if g.prunable]
    >>> scores = tfsparse.scoring.L1()(model, groups)
    >>> [s.shape for s in scores]
    [(16,), (32,)]
    """

    def statistics(self, model, groups, data):
        return {key: [np.abs(w)] for key, w in self.kernels(model, groups).items()}

    def combine(self, sums, counts):
        return sums[0]


class L2(ChannelImportance):
    """Filter norm `sqrt(sum w^2)` over the same kernels as `L1`: the norm of all the channel's kernel entries.

    Example:

    >>> groups = [g for g in tfsparse.surgery.dependency_groups(model) if g.prunable]
    >>> bool(np.all(tfsparse.scoring.L2()(model, groups)[0] > 0))
    True
    """

    def statistics(self, model, groups, data):
        return {key: [np.square(w)] for key, w in self.kernels(model, groups).items()}

    def combine(self, sums, counts):
        return np.sqrt(sums[0])


class BNScale(ChannelImportance):
    """`|gamma|` of the BatchNormalization that carries the channel (network slimming, Liu et al., 2017).

    Where several BatchNormalizations carry a channel (a residual sum of
    normalized branches), their `|gamma|` are added.

    Raises (when called):
        ValueError: for a group with a channel no BatchNormalization
            (with a scale) carries.

    Example:

    >>> inputs = keras.Input((8, 8, 1))
    >>> h = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    >>> net = keras.Model(inputs, keras.layers.Conv2D(2, 1)(h))
    >>> _ = net.get_layer("bn").gamma.assign([1.0, -3.0, 0.5, 2.0])
    >>> group = tfsparse.surgery.dependency_groups(net)[0]
    >>> tfsparse.scoring.BNScale()(net, [group])[0].tolist()
    [1.0, 3.0, 0.5, 2.0]
    """

    roles = ("member",)

    def statistics(self, model, groups, data):
        stats = {}
        for group in groups:
            for piece in group.slices:
                layer = model.get_layer(piece.layer)
                if isinstance(layer, keras.layers.BatchNormalization) and piece.weight == "gamma":
                    stats[piece.layer, "gamma"] = [np.abs(weight_named(layer, "gamma").numpy())]
            if not any(key[0] in group.members for key in stats):
                raise ValueError(
                    f"Argument `importance`='bn_scale' scores channels by the BatchNormalization that follows "
                    f"them, but the group of producers {list(group.producers)} has none (or none with a scale); "
                    f"exclude its producers or choose another importance."
                )
        return stats

    def combine(self, sums, counts):
        return sums[0]


class Taylor(ChannelImportance):
    """First-order Taylor `|sum over the channel of w * dL/dw|` (Molchanov et al., 2019).

    The first-order estimate of how much the loss changes when the
    channel is removed: `w * dL/dw` is summed over all the channel's kernel
    entries in the group (the kernels of `L1`), then its absolute value
    taken. Gradients are those of the mean loss over `batches` batches of
    `data`, in training mode, at the current weights (see
    `tfsparse.scoring.snip_saliency`); a progress bar shows from 5 batches
    on. Under a `tf.distribute` strategy each batch is split across the
    replicas; the scores equal those of one device for models without
    BatchNormalization (in training mode each replica normalizes its part
    of the batch with its own statistics, as under `model.fit`).

    Args:
        batches: how many batches of `data` to average the gradient over.
        loss: the loss (default: the model's compiled loss, else sparse
            categorical cross-entropy on logits).

    Example:

    >>> groups = [g for g in tfsparse.surgery.dependency_groups(pretrained) if g.prunable]
    >>> scores = tfsparse.scoring.Taylor(batches=2)(pretrained, groups, train_ds)
    >>> scores[1].shape
    (32,)
    """

    def __init__(self, batches=1, loss=None):
        self.batches = checks.check_positive_int(batches, "batches")
        self.loss = loss

    def statistics(self, model, groups, data):
        if data is None:
            raise ValueError("Argument `data` is required by importance 'taylor' (batches to take gradients on).")
        kernels = self.kernels(model, groups)
        variables = [weight_named(model.get_layer(layer), weight) for layer, weight in kernels]
        grads = mean_gradients(model, variables, data, self.batches, self.loss)
        return {key: [w * keras.ops.convert_to_numpy(g)] for (key, w), g in zip(kernels.items(), grads)}

    def combine(self, sums, counts):
        return np.abs(sums[0])

    def get_config(self):
        return {"batches": self.batches, "loss": self.loss}


class HessianTrace(ChannelImportance):
    """HAP's relative sensitivity `T_c * ||W_c||^2 / numel(W_c)` (Yu et al., 2022, "Hessian-Aware Pruning").

    `T_c` is the Hutchinson estimate of the trace of the Hessian block of
    the channel's kernel entries in one producer (see
    `tfsparse.scoring.hessian_trace`), `||W_c||^2 / numel(W_c)` the mean
    square of those entries: the second-order estimate of the loss change
    when the channel is zeroed, per entry. A channel's score sums this
    over the group's producers (coupled channels of a residual sum add
    their sensitivities); BatchNormalization and biases are not scored.

    The scores are comparable across groups (`comparable` is True):
    `tfsparse.prune_channels` ranks them globally as they are, without the
    group normalization it applies to other criteria, as the official code
    does. A negative trace estimate (too few samples, or a loss that is
    locally concave along the channel) gives a negative score: such a
    channel ranks as the least sensitive and is removed first.

    Per-channel estimates are noisy: on a ResNet-20 trained briefly, most
    are within two standard errors of zero at 32 x 4 samples
    (`benchmarks/hessian_noise.py`), and the ranking is then mostly noise.
    `per="layer"` trades the channel blocks for one trace per kernel, an
    estimate with far less noise: each entry is given its layer's mean
    diagonal `T_layer / numel(W)`, so a channel scores `T_layer * ||W_c||^2
    / numel(W)` (the second-order loss change of zeroing it under that
    diagonal Hessian): within a layer the channels rank by `||W_c||^2`,
    across layers by the curvature. Less noise is not a better ranking
    by itself: on that ResNet-20 it pruned more unevenly and fine-tuned
    to lower accuracy than the per-channel estimates.

    Args:
        samples: how many Rademacher vectors to draw (the official code
            draws 3 to 300; the estimate's standard error shrinks like
            `1 / sqrt(samples)`).
        batches: how many batches of `data` the loss averages.
        loss: the loss (default: the model's compiled loss, else sparse
            categorical cross-entropy on logits).
        seed: the seed of the Rademacher vectors (default: drawn).
        verbose: 1 shows a progress bar over the samples, 0 nothing.
        per: `"channel"` (HAP's block traces) or `"layer"` (one trace per
            kernel, see above).

    Example:

    >>> groups = [g for g in tfsparse.surgery.dependency_groups(pretrained) if g.prunable]
    >>> scores = tfsparse.scoring.HessianTrace(samples=4, verbose=0)(pretrained, groups, (x[:64], y[:64]))
    >>> [s.shape for s in scores]
    [(16,), (32,)]
    """

    roles = ("producer",)
    comparable = True

    def __init__(self, samples=32, batches=1, loss=None, seed=None, verbose=1, per="channel"):
        if per not in ("channel", "layer"):
            raise ValueError(f"Argument `per` must be 'channel' or 'layer', received: {per!r}.")
        self.per = per
        self.samples = checks.check_positive_int(samples, "samples")
        self.batches = checks.check_positive_int(batches, "batches")
        self.loss = loss
        self.seed = None if seed is None else checks.check_seed(seed)
        self.verbose = verbose

    def statistics(self, model, groups, data):
        if data is None:
            raise ValueError("Argument `data` is required by importance 'hessian' (batches to take the Hessian on).")
        traces = hessian_trace(model, data, self.samples, self.batches, per="weight" if self.per == "channel" else
                               "layer", loss=self.loss, seed=self.seed, verbose=self.verbose)
        stats = {}
        for group in groups:
            for piece in group.slices:
                key = f"{piece.layer}/{piece.weight}"
                if piece.role in self.roles and key in traces:
                    weight = weight_named(model.get_layer(piece.layer), piece.weight).numpy()
                    # Each entry carries its trace times the mean square of its channel in this weight.
                    along = np.moveaxis(np.square(weight, dtype=np.float64), piece.axis, -1)
                    mean_square = along.reshape(-1, along.shape[-1]).mean(axis=0)
                    shape = [1] * weight.ndim
                    shape[piece.axis] = -1
                    # Per layer, each entry carries the layer's mean diagonal.
                    trace = traces[key].value if self.per == "channel" else traces[key].value / weight.size
                    stats[piece.layer, piece.weight] = [np.broadcast_to(trace * mean_square.reshape(shape),
                                                                        weight.shape)]
        return stats

    def combine(self, sums, counts):
        return sums[0]

    def get_config(self):
        return {"samples": self.samples, "batches": self.batches, "loss": self.loss, "seed": self.seed,
                "verbose": self.verbose, "per": self.per}


CRITERIA = {"l1": L1, "l2": L2, "bn_scale": BNScale, "taylor": Taylor, "hessian": HessianTrace}


def get(importance):
    """Returns the `ChannelImportance` named `importance` (or `importance` itself if it is one).

    Raises:
        ValueError: for an unknown name or another kind of object.

    Example:

    >>> type(tfsparse.scoring.channel_criteria.get("l1")).__name__
    'L1'
    """
    if isinstance(importance, ChannelImportance):
        return importance
    if isinstance(importance, str) and importance in CRITERIA:
        return CRITERIA[importance]()
    raise ValueError(
        f"Argument `importance` must be one of {sorted(CRITERIA)} or a tfsparse.scoring.ChannelImportance, "
        f"received: {importance!r}."
    )
