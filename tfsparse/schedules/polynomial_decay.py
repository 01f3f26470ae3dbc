"""Sparsity that rises along a polynomial from an initial to a final value."""

import math
import numbers

import keras
import tensorflow as tf

from tfsparse.checks import check_fraction
from tfsparse.schedules.schedule import PruningSchedule, check_steps


@keras.saving.register_keras_serializable(package="tfsparse")
class PolynomialDecay(PruningSchedule):
    """Gradual pruning (Zhu & Gupta, 2017), with TFMOT's semantics.

    The sparsity at step t is
    `final + (initial - final) * (1 - p) ** power`, with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`: it rises
    fast at first and levels off at `final_sparsity` at `end_step`.

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1).
        final_sparsity: sparsity from `end_step` on, in [0, 1).
        begin_step: first step at which masks are computed.
        end_step: step at which the final sparsity is reached (>= begin_step).
        power: exponent of the polynomial, a finite number > 0 (at 0 the
            sparsity would stay at `final_sparsity` from the first step).
        frequency: masks are recomputed every `frequency` steps.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100)
    >>> round(float(schedule.sparsity(100)), 3)
    0.8
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        self.initial_sparsity = check_fraction(initial_sparsity, "initial_sparsity")
        self.final_sparsity = check_fraction(final_sparsity, "final_sparsity")
        super().__init__(*check_steps(begin_step, end_step, frequency, allow_no_end=False))
        self.power = _check_power(power)

    def sparsity(self, step):
        span = max(self.end_step - self.begin_step, 1)
        p = tf.clip_by_value(tf.cast(step - self.begin_step, tf.float32) / span, 0.0, 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "power": self.power,
            **super().get_config(),
        }


def _check_power(power):
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not 0 < power < math.inf:
        raise ValueError(f"Argument `power` must be a finite number > 0, received: {power!r}.")
    return int(power) if isinstance(power, numbers.Integral) else float(power)
