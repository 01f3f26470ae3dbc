"""Channel importance: one score per channel of every channel group, by a named criterion.

A criterion computes per-element statistics of some weights (`|w|`,
`w * dL/dw`, ...). For each channel of a group, each statistic is summed
over the channel's part of every weight slice the criterion scores
(producers' kernels, the depthwise kernels that carry the channel, the
BatchNormalization gammas, ...), pooled over all the group's slices; the
criterion then combines those per-channel sums into the score. Pooling
over the group makes a residual channel, written by several producers,
one channel with one score.
"""

import abc

import numpy as np

from tfsparse.registry import is_prunable, prunable_weight_names
from tfsparse.walk import weight_named

PRODUCER_AND_MEMBER = ("producer", "member")


class ChannelImportance(abc.ABC):
    """Base class of channel criteria: scores every channel of `ChannelGroup`s.

    A criterion implements `statistics` (per-element arrays of the weights
    it reads) and `combine` (per-channel sums of those arrays -> scores).
    `roles` says which slices of a group count.

    Example: a criterion is a short subclass. This one scores a channel by
    the squared norm of its kernels over their number of entries (HAP's
    `||W_c||^2 / numel(W_c)`; HAP multiplies it by a Hessian trace, one
    more statistic):

    >>> class MeanSquare(tfsparse.scoring.ChannelImportance):
    ...     def statistics(self, model, groups, data):
    ...         return {key: [np.square(w)] for key, w in self.kernels(model, groups).items()}
    ...     def combine(self, sums, counts):
    ...         return sums[0] / np.maximum(counts, 1)
    >>> groups = [g for g in tfsparse.surgery.dependency_groups(model) if g.prunable]
    >>> [s.shape for s in MeanSquare()(model, groups)]
    [(16,), (32,)]
    """

    roles = PRODUCER_AND_MEMBER
    # Whether scores of different groups are on one scale (global ranking takes them as they are).
    comparable = False

    def __call__(self, model, groups, data=None):
        """Returns one score array per group (float64, one score per group channel).

        Args:
            model: the plain model the groups come from (layer names as in
                the groups).
            groups: `ChannelGroup`s of `tfsparse.surgery.dependency_groups(model)`.
            data: batches for criteria that need gradients, else unused.
        """
        stats = self.statistics(model, groups, data)
        return [self.combine(*_channel_sums(group, stats, self.roles)) for group in groups]

    @abc.abstractmethod
    def statistics(self, model, groups, data):
        """Returns `{(layer name, weight name): [array, ...]}`: per-element statistics of the weights scored.

        Every weight lists the same number of arrays, each shaped like it.
        """

    @abc.abstractmethod
    def combine(self, sums, counts):
        """Returns the scores of a group's channels.

        Args:
            sums: one array per statistic: its sum over each channel's entries.
            counts: the number of entries of each channel.
        """

    def kernels(self, model, groups):
        """Returns `{(layer, weight): NumPy array}` of the prunable weights (kernels) in the groups' slices."""
        found = {}
        for group in groups:
            for piece in group.slices:
                layer = model.get_layer(piece.layer)
                if piece.role in self.roles and is_prunable(layer) and piece.weight in prunable_weight_names(layer):
                    found[piece.layer, piece.weight] = weight_named(layer, piece.weight).numpy()
        return found

    def get_config(self):
        return {}


def _channel_sums(group, stats, roles):
    """(per-statistic sums, entry counts) of each channel of `group` over the slices in `stats`."""
    width = len(next(iter(stats.values()), [None]))
    sums = [np.zeros(group.size) for _ in range(width)]
    counts = np.zeros(group.size)
    for piece in group.slices:
        arrays = stats.get((piece.layer, piece.weight))
        if piece.role not in roles or arrays is None:
            continue
        owners = np.repeat(np.arange(group.size), [len(p) for p in piece.positions])
        positions = np.fromiter((p for ps in piece.positions for p in ps), dtype=np.int64, count=len(owners))
        entries = arrays[0].size // arrays[0].shape[piece.axis]
        np.add.at(counts, owners, entries)
        for total, array in zip(sums, arrays):
            along = np.moveaxis(np.asarray(array, dtype=np.float64), piece.axis, 0).reshape(array.shape[piece.axis], -1)
            np.add.at(total, owners, along.sum(axis=1)[positions])
    return sums, counts
