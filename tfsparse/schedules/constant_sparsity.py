"""Constant sparsity, applied every `frequency` steps."""

import keras
import tensorflow as tf

from tfsparse.checks import check_fraction
from tfsparse.schedules.schedule import PruningSchedule, check_steps


@keras.saving.register_keras_serializable(package="tfsparse")
class ConstantSparsity(PruningSchedule):
    """Prunes to a fixed sparsity from `begin_step` on, like TFMOT's schedule.

    Args:
        target_sparsity: fraction of weights to prune, in [0, 1).
        begin_step: first step at which masks are computed.
        end_step: last step at which masks are recomputed; -1 for no end.
        frequency: masks are recomputed every `frequency` steps.

    Example:

    >>> schedule = ConstantSparsity(0.9, begin_step=0, frequency=100)
    >>> [bool(b) for b, _ in map(schedule, [0, 50, 100])]
    [True, False, True]
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = check_fraction(target_sparsity, "target_sparsity")
        super().__init__(*check_steps(begin_step, end_step, frequency, allow_no_end=True))

    def sparsity(self, step):
        return tf.constant(self.target_sparsity, tf.float32)

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}
