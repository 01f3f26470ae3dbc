"""TFMOT's pruning names in one namespace, for a one-line migration from `tfmot.sparsity.keras`.

Each name is the tfsparse object of the same name (schedules, callbacks,
`prune_low_magnitude`, `strip_pruning`, `prune_scope`), re-exported flat as
TFMOT's `tensorflow_model_optimization.sparsity.keras` has them:

>>> from tfsparse import tfmot as sparsity  # was: from tensorflow_model_optimization.sparsity import keras as sparsity
>>> schedule = sparsity.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100)
>>> pruned = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
>>> pruned.get_layer("prune_low_magnitude_conv1").pruning_schedule is schedule
True
"""

from tfsparse.callbacks import PruningSummaries, UpdatePruningStep
from tfsparse.methods import prune_low_magnitude, prune_scope
from tfsparse.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfsparse.surgery import strip as strip_pruning

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]
