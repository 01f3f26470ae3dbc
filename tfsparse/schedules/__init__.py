"""Sparsity schedules over training steps (TFMOT-compatible)."""

from tfsparse.schedules.constant_sparsity import ConstantSparsity
from tfsparse.schedules.polynomial_decay import PolynomialDecay
from tfsparse.schedules.schedule import PruningSchedule, get

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule", "get"]
