"""Optimizers and gradient transforms."""

from tfsparse.optimizers.centripetal import centripetal_gradient, cluster_mean, segment_ids
from tfsparse.optimizers.centripetal_sgd import CentripetalSGD
from tfsparse.optimizers.cosine_sgd import cosine_sgd

__all__ = ["CentripetalSGD", "centripetal_gradient", "cluster_mean", "cosine_sgd", "segment_ids"]
