"""Channel counts of the reference models under a width multiplier."""

import numbers


def scaled(channels, width, argument="width"):
    """Returns `round(channels * width)`, at least 1.

    Args:
        channels: the channel count at width 1.
        width: a positive multiplier.
        argument: the name of the user argument `width` comes from.

    Raises:
        ValueError: if `width` is not a positive number.

    Example:

    >>> scaled(16, 0.75)
    12
    """
    if not isinstance(width, numbers.Real) or isinstance(width, bool) or not width > 0:
        raise ValueError(f"Argument `{argument}` must be a positive number, received: {width!r}.")
    return max(1, int(round(channels * width)))
