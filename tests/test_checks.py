"""Shared argument checks: NumPy scalars pass where Python numbers do; wrong types are caught as either kind."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfsparse as ts  # noqa: E402
from tfsparse import checks  # noqa: E402


def test_numpy_scalars_are_numbers():
    schedule = ts.schedules.ConstantSparsity(np.float32(0.5), np.int64(3), frequency=np.int32(2))
    assert schedule.get_config() == {"target_sparsity": 0.5, "begin_step": 3, "end_step": -1, "frequency": 2}
    assert all(type(v) in (int, float) for v in schedule.get_config().values())
    assert checks.check_fraction(np.float64(1.0), "rate", include_one=True) == 1.0
    assert checks.check_seed(np.uint32(7)) == 7


@pytest.mark.parametrize("value", ["0.5", None, [0.5]])
def test_a_wrong_type_is_both_a_type_and_a_value_error(value):
    for kind in (TypeError, ValueError):
        with pytest.raises(kind, match=r"Argument `sparsity` must be a number in \[0, 1\), received: "):
            checks.check_fraction(value, "sparsity")


@pytest.mark.parametrize("value, include_one", [(1.0, False), (-0.1, True), (1.5, True), (float("nan"), True)])
def test_a_fraction_out_of_range_is_a_value_error(value, include_one):
    with pytest.raises(ValueError, match="Argument `rate` must be a number in"):
        checks.check_fraction(value, "rate", include_one=include_one)


def test_seeds_are_32_bit_unsigned_integers():
    with pytest.raises(ValueError, match=r"in \[0, 2\*\*32\), received: 4294967296"):
        checks.check_seed(2**32)
    with pytest.raises(TypeError, match="must be an integer, received: 1.5"):
        checks.check_seed(1.5)
    assert 0 <= checks.resolve_seed(None) < 2**32


@pytest.mark.parametrize("power", [0, -1, float("nan"), float("inf"), "3", None])
def test_polynomial_decay_refuses_a_power_that_cannot_prune(power):
    with pytest.raises(ValueError, match=r"Argument `power` must be a finite number > 0, received: "):
        ts.schedules.PolynomialDecay(0.0, 0.5, 0, 10, power=power)


def test_polynomial_decay_keeps_the_type_of_its_power():
    assert ts.schedules.PolynomialDecay(0.0, 0.5, 0, 10, power=np.int64(2)).get_config()["power"] == 2
    assert ts.schedules.PolynomialDecay(0.0, 0.5, 0, 10, power=0.5).get_config()["power"] == 0.5


def test_transforms_and_loaders_name_a_bad_model_or_seed():
    with pytest.raises(TypeError, match=r"Argument `model` must be a keras.Model, received: 'x'"):
        ts.strip("x")
    unbuilt = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"Argument `model` \('\w+'\) is not built"):
        ts.lottery_jackpot(unbuilt, 0.5)
    with pytest.raises(TypeError, match=r"Argument `seed` must be an integer, received: 'x'"):
        ts.data.load("digits", "train", 32, seed="x")
