"""Argument checks shared by the public functions, with messages that name the argument."""

import numbers
import random

import keras
import numpy as np

SEED_LIMIT = 2**32


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type.

    Both a `TypeError` and a `ValueError`, so that code written for either
    (TFMOT raises `ValueError` for such arguments) catches it.
    """


def check_built(layer, argument="model"):
    """Raises `ValueError` unless the model or layer `layer` is built."""
    if not layer.built:
        raise ValueError(
            f"Argument `{argument}` ({layer.name!r}) is not built. Build it first, e.g. "
            f"`model.build(input_shape)` or call it on a batch of data."
        )


def check_model(model, argument="model"):
    """Raises unless `model` is a built `keras.Model`.

    Raises:
        ArgumentTypeError: if it is not a `keras.Model`.
        ValueError: if it is not built.
    """
    if not isinstance(model, keras.Model):
        raise ArgumentTypeError(
            f"Argument `{argument}` must be a keras.Model, received: {model!r} (of type {type(model).__name__})."
        )
    check_built(model, argument)


def check_fraction(value, argument, include_one=False):
    """Returns `value` as a float after checking it is a number in [0, 1) (or [0, 1]).

    NumPy scalars are accepted as Python numbers are.

    Raises:
        ArgumentTypeError: if `value` is not a real number.
        ValueError: if it is outside the interval.
    """
    interval = "[0, 1]" if include_one else "[0, 1)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"Argument `{argument}` must be a number in {interval}, received: {value!r}.")
    if not (0 <= value <= 1 if include_one else 0 <= value < 1):
        raise ValueError(f"Argument `{argument}` must be a number in {interval}, received: {value!r}.")
    return float(value)


def check_positive_int(value, argument):
    """Returns `value` as an int after checking it is an integer >= 1.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Argument `{argument}` must be a positive integer, received: {value!r}.")
    return int(value)


def check_non_negative_int(value, argument):
    """Returns `value` as an int after checking it is an integer >= 0.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"Argument `{argument}` must be an integer >= 0, received: {value!r}.")
    return int(value)


def check_positive_number(value, argument):
    """Returns `value` as a float after checking it is a finite real number > 0.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
        raise ValueError(f"Argument `{argument}` must be a positive number, received: {value!r}.")
    return float(value)


def check_seed(seed, argument="seed"):
    """Returns `seed` as an int after checking it is a 32-bit unsigned integer.

    Raises:
        ArgumentTypeError: if `seed` is not an integer.
        ValueError: if it is outside `[0, 2**32)`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)):
        raise ArgumentTypeError(
            f"Argument `{argument}` must be an integer, received: {seed!r} (of type {type(seed).__name__})."
        )
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"Argument `{argument}` must be in [0, 2**32), received: {seed}.")
    return int(seed)


def resolve_seed(seed, argument="seed"):
    """Returns `seed` checked, or a fresh 32-bit seed from Python's `random` if it is None.

    `random` is seeded by `keras.utils.set_random_seed`, so a fixed global
    seed gives a fixed drawn seed.
    """
    return random.getrandbits(32) if seed is None else check_seed(seed, argument)
