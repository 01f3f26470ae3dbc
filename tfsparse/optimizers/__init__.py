"""Optimizers and gradient transforms."""

from tfsparse.optimizers.centripetal import averaging_matrix, centripetal_gradient, cluster_mean
from tfsparse.optimizers.centripetal_sgd import CentripetalSGD
from tfsparse.optimizers.cosine_sgd import cosine_sgd

__all__ = ["CentripetalSGD", "averaging_matrix", "centripetal_gradient", "cluster_mean", "cosine_sgd"]
