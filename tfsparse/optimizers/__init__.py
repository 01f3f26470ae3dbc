"""Optimizers and gradient transforms."""

from tfsparse.optimizers.cosine_sgd import cosine_sgd
from tfsparse.optimizers.polarization import Polarization, polarization, polarization_gradients

__all__ = ["Polarization", "cosine_sgd", "polarization", "polarization_gradients"]
