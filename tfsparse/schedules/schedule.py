"""The base class of sparsity schedules and the conversion of foreign ones."""

import abc

import numbers

import keras
import tensorflow as tf


def check_steps(begin_step, end_step, frequency, allow_no_end):
    """Returns `(begin_step, end_step, frequency)` as ints, checked.

    Raises:
        ValueError: for a non-integer, a negative `begin_step`, an `end_step`
            before it or a `frequency` below 1.
    """
    for name, value in (("begin_step", begin_step), ("end_step", end_step), ("frequency", frequency)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"Argument `{name}` must be an integer, received: {value!r}.")
    if begin_step < 0:
        raise ValueError(f"Argument `begin_step` must be >= 0, received: {begin_step}.")
    if end_step == -1 and not allow_no_end:
        raise ValueError("Argument `end_step` must be >= `begin_step` for this schedule, received: -1.")
    if end_step != -1 and end_step < begin_step:
        allowed = "-1 (no end) or " if allow_no_end else ""
        raise ValueError(
            f"Argument `end_step` must be {allowed}>= `begin_step` ({begin_step}), "
            f"received: {end_step}."
        )
    if frequency <= 0:
        raise ValueError(f"Argument `frequency` must be > 0, received: {frequency}.")
    return int(begin_step), int(end_step), int(frequency)


class PruningSchedule(abc.ABC):
    """A sparsity target over training steps, with TFMOT's call convention.

    Calling a schedule with a step (a scalar integer tensor) returns
    `(should_prune, sparsity)`: whether masks are recomputed at that step and
    the sparsity they are recomputed to. Masks are recomputed only at steps in
    `[begin_step, end_step]` (`end_step=-1`: no end) that are a multiple of
    `frequency` steps after `begin_step`.

    Steps count training batches from 1, as in TFMOT: the k-th batch is step
    k, so `begin_step=0` first prunes at step `frequency`, and
    `begin_step=end_step=N` prunes once, at the N-th batch.
    """

    def __init__(self, begin_step, end_step, frequency):
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def should_prune(self, step):
        """Returns a boolean tensor: is `step` a mask-update step?"""
        step = tf.cast(step, tf.int64)
        in_range = tf.logical_and(
            step >= self.begin_step,
            tf.logical_or(step <= self.end_step, self.end_step < 0),
        )
        return tf.logical_and(in_range, (step - self.begin_step) % self.frequency == 0)

    @abc.abstractmethod
    def sparsity(self, step):
        """Returns the target sparsity at `step` as a float32 tensor."""

    def __call__(self, step):
        return self.should_prune(step), self.sparsity(step)

    def get_config(self):
        return {"begin_step": self.begin_step, "end_step": self.end_step, "frequency": self.frequency}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def get(schedule):
    """Returns a tfsparse schedule for `schedule`.

    Accepts a tfsparse schedule, TFMOT's `ConstantSparsity` or
    `PolynomialDecay` objects as they are (converted by class name and
    config, so the wrapped model serializes without TFMOT), or a serialized
    schedule dict.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(schedule, PruningSchedule):
        return schedule
    if isinstance(schedule, dict):
        return keras.saving.deserialize_keras_object(schedule)
    name = type(schedule).__name__
    cls = keras.saving.get_registered_object(f"tfsparse>{name}")
    if cls is not None and callable(schedule) and hasattr(schedule, "get_config"):
        config = schedule.get_config()  # TFMOT nests it: {"class_name", "config"}
        return cls.from_config(config.get("config", config))
    raise TypeError(
        f"Argument `pruning_schedule` must be a tfsparse or TFMOT pruning schedule "
        f"(ConstantSparsity, PolynomialDecay), received: {schedule!r}."
    )
