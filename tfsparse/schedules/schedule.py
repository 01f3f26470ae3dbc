"""The base class of sparsity schedules and the conversion of foreign ones."""

import numbers

import keras
import tensorflow as tf

from tfsparse.checks import ArgumentTypeError


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


class PruningSchedule:
    """A sparsity target over training steps, with TFMOT's call convention.

    Calling a schedule with a step (a scalar integer tensor) returns
    `(should_prune, sparsity)`: whether masks are recomputed at that step and
    the sparsity they are recomputed to. This call is all the wrappers use.
    A subclass either implements `sparsity` (masks are then recomputed at
    steps in `[begin_step, end_step]` (`end_step=-1`: no end) that are a
    multiple of `frequency` steps after `begin_step`; by default, every
    step), or overrides `__call__` itself, as TFMOT's schedules do.

    Steps count training batches from 1, as in TFMOT: the k-th batch is step
    k, so `begin_step=0` first prunes at step `frequency`, and
    `begin_step=end_step=N` prunes once, at the N-th batch.

    Example (a TFMOT-style subclass: prune to 50% at steps 2 and 4):

    >>> class EvenSteps(PruningSchedule):
    ...     def __call__(self, step):
    ...         return step % 2 == 0, tf.constant(0.5)
    ...     def get_config(self):
    ...         return {}
    >>> bool(EvenSteps()(tf.constant(4))[0])
    True
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__call__ is PruningSchedule.__call__ and cls.sparsity is PruningSchedule.sparsity:
            raise TypeError(
                f"Schedule class {cls.__name__} must implement `sparsity(step)` or override "
                f"`__call__(step)` (returning `(should_prune, sparsity)`)."
            )

    def __init__(self, begin_step=0, end_step=-1, frequency=1):
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def should_prune(self, step):
        """Returns a boolean tensor: is `step` a mask-update step?"""
        step = tf.cast(step, tf.int64)
        # Only the tests the configuration needs: this runs in every training step.
        due = step >= self.begin_step
        if self.end_step >= 0:
            due = tf.logical_and(due, step <= self.end_step)
        if self.frequency != 1:
            due = tf.logical_and(due, (step - self.begin_step) % self.frequency == 0)
        return due

    def sparsity(self, step):
        """Returns the target sparsity at `step` as a float32 tensor."""
        return tf.cast(self(step)[1], tf.float32)

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
    """Returns a schedule the wrappers can call, for `schedule`.

    Accepts a tfsparse schedule; TFMOT's `ConstantSparsity` or
    `PolynomialDecay` objects (converted by class name and config, so the
    wrapped model serializes without TFMOT); any other object that follows
    TFMOT's schedule protocol (callable as `schedule(step) -> (should_prune,
    sparsity)`, with a `get_config`), e.g. a subclass of TFMOT's
    `PruningSchedule`, as it is; or a serialized schedule dict.

    Raises:
        ArgumentTypeError: (a `TypeError` and a `ValueError`) for anything else.
    """
    if isinstance(schedule, PruningSchedule):
        return schedule
    if isinstance(schedule, dict):
        return keras.saving.deserialize_keras_object(schedule)
    if callable(schedule) and hasattr(schedule, "get_config"):
        cls = keras.saving.get_registered_object(f"tfsparse>{type(schedule).__name__}")
        if cls is None:
            return schedule
        config = schedule.get_config()  # TFMOT nests it: {"class_name", "config"}
        return cls.from_config(config.get("config", config))
    raise ArgumentTypeError(
        f"Argument `pruning_schedule` must be a tfsparse or TFMOT pruning schedule (ConstantSparsity, "
        f"PolynomialDecay, or a PruningSchedule subclass: callable on a step, with `get_config`), "
        f"received: {schedule!r}."
    )
