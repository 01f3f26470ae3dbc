"""SGD with momentum and a cosine learning rate: the recipe of the papers' reference runs."""

import keras

from tfsparse import checks


def cosine_sgd(steps, learning_rate=0.1, momentum=0.9, weight_decay=None):
    """SGD with momentum, its learning rate decayed to 0 along a cosine over `steps`.

    The reference recipe of FreezeNet and SNIP (`weight_decay=5e-4`, the
    paper's MNIST setting, with a cosine in place of tenfold drops to fit
    short runs) and of the Lottery Jackpot search (no weight decay here:
    `tfsparse.lottery_jackpot(weight_decay=...)` puts it on the scores,
    coupled with the momentum). The learning rate decays per step.

    For a Lottery Jackpot search the score gradient is `g * w`, so the step
    a mask change needs depends on the weights' scale: 0.1 is the reference's
    value for CIFAR networks searched for 30 epochs; for a search of one
    epoch on Fashion-MNIST, 0.3 did best (see `benchmarks/jackpot.py`).

    Args:
        steps: total training steps (epochs x batches per epoch), > 0.
        learning_rate: initial learning rate.
        momentum: SGD momentum.
        weight_decay: decoupled weight decay, or None. Under FreezeNet it
            moves only what the effective weights use (see
            `tfsparse.layers.Frozen`).

    Returns:
        A `keras.optimizers.SGD`.

    Raises:
        ValueError: if `steps` is not a positive integer.

    Example:

    >>> optimizer = tfsparse.optimizers.cosine_sgd(steps=100, weight_decay=5e-4)
    >>> round(float(optimizer.learning_rate), 4)
    0.1
    """
    steps = checks.check_positive_int(steps, "steps")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    return keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay)
