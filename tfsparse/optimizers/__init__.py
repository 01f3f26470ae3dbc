"""Optimizers and gradient transforms."""

from tfsparse.optimizers.centripetal import averaging_matrix, centripetal_gradient, cluster_mean
from tfsparse.optimizers.centripetal_sgd import CentripetalSGD
from tfsparse.optimizers.cosine_sgd import cosine_sgd
from tfsparse.optimizers.polarization import Polarization, polarization, polarization_gradients

__all__ = [
    "CentripetalSGD",
    "Polarization",
    "averaging_matrix",
    "centripetal_gradient",
    "cluster_mean",
    "cosine_sgd",
    "polarization",
    "polarization_gradients",
]
