"""`ClusterMonitor`: how far the channels of each C-SGD cluster still are from identical."""

import keras

from tfsparse.methods.csgd import distances


@keras.saving.register_keras_serializable(package="tfsparse")
class ClusterMonitor(keras.callbacks.Callback):
    """Reports, per layer, how far clustered channels still are from their kept channel, after each epoch.

    The figures are those of `tfsparse.csgd.distances`: for every layer that
    holds clustered channels (kernels, biases, BatchNorm parameters and
    moving statistics), the largest Euclidean distance of a channel to the
    channel of its cluster that the trim keeps. The trim is exact once they are all ~0; the BatchNorm
    moving statistics are the last to agree (momentum 0.99: some hundred
    steps after the filters). The overall largest goes into the epoch's
    logs as `cluster_distance` (so `History` records it), the per-layer
    figures into `history`. Epoch-level only: no per-batch hook.

    Args:
        clusters: the result of `tfsparse.csgd.clusters`.
        print_fn: called with a one-line report per epoch (the largest
            distance and its layer); `None` prints nothing.

    Attributes:
        history: one `{layer: largest distance}` per epoch.

    Example:

    >>> plan = tfsparse.csgd.clusters(model, 0.5, method="even")
    >>> model.compile(tfsparse.optimizers.CentripetalSGD(plan, 0.05, centripetal_strength=1.0),
    ...               keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    >>> monitor = tfsparse.callbacks.ClusterMonitor(plan, print_fn=None)
    >>> history = model.fit(x[:64], y[:64], batch_size=64, epochs=2, verbose=0, callbacks=[monitor])
    >>> sorted(monitor.history[-1]), history.history["cluster_distance"][1] < history.history["cluster_distance"][0]
    (['conv1', 'conv2', 'conv3'], True)
    """

    def __init__(self, clusters, print_fn=print):
        super().__init__()
        self.clusters = clusters
        self.print_fn = print_fn
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        found = distances(self.model, self.clusters)
        self.history.append(found)
        if not found:
            return
        worst = max(found, key=found.get)
        if logs is not None:
            logs["cluster_distance"] = found[worst]
        if self.print_fn is not None:
            self.print_fn(
                f"Epoch {epoch + 1}: largest distance to the kept channel {found[worst]:.3g} (layer {worst!r}).")

    def get_config(self):
        return {"clusters": self.clusters}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
